//! Progress for long work (load, save) on a terminal; nothing when stderr
//! is not a terminal or with -q, so scripts see only the results.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Read};

/// A byte counter drawn on stderr when it is a terminal; a no-op otherwise.
pub struct Bytes {
    bar: Option<ProgressBar>,
}

impl Bytes {
    pub fn new(label: &str, total: Option<u64>, quiet: bool) -> Bytes {
        if quiet || !std::io::stderr().is_terminal() {
            return Bytes { bar: None };
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes}"
        } else {
            "{msg} {binary_bytes}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        // Draw now: short work would otherwise end before the first frame.
        bar.tick();
        Bytes { bar: Some(bar) }
    }

    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A reader that reports the bytes read through it.
pub struct Counting<'a, R> {
    pub inner: R,
    pub progress: &'a Bytes,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}
