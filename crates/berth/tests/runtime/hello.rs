//! The built-in hello-world program, run by the runtime in a container whose
//! root holds nothing else.

use crate::harness::*;
use serde_json::json;

#[test]
fn hello_world_runs_isolated() {
    need_root!();
    let c = Ctr::with("hello", |c| {
        c["process"]["args"] = json!(["/hello"]);
        c["hostname"] = json!("hello-host");
    });
    let exe = c.rootfs().join("hello");
    std::fs::write(&exe, berth_image::builtin::HELLO_PROGRAM).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = c.run().ok();
    assert!(o.stdout.contains("Hello from berth!"), "{o}");
    assert!(o.stdout.contains("its process ID is 1 "), "{o}");
    assert!(o.stdout.contains("its hostname is hello-host"), "{o}");
    assert!(o.stdout.contains(" hello"), "{o}");
}
