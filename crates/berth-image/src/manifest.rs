//! Image indexes, manifests and configs: OCI and Docker schema2 read alike,
//! OCI written.
//!
//! Docker's schema2 manifest and manifest list have the structure of OCI's
//! image manifest and image index, so both parse into oci-spec's types and
//! their Docker media types (of the document and of its descriptors) are
//! turned into the OCI ones. The digest of a manifest is always the sha256 of
//! the exact bytes it came as: keep those bytes to store or push it, and use
//! the parsed value only to read it. Schema1 manifests are refused, and so is
//! a document that could be read both as an index and as a manifest.
//!
//! Configs keep the same rule: the image ID is the sha256 of the config bytes,
//! never of a re-encoding. What berth writes it encodes as canonical JSON
//! (object keys sorted, no whitespace), so the same image gives the same
//! digests every time.

use crate::digest::{Digest, DigestError};
use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os, Platform,
};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use std::str::FromStr;

/// The largest manifest or index berth reads. A registry client should stop
/// reading at this size rather than buffer more.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// The largest image config berth reads.
pub const MAX_CONFIG_SIZE: usize = 8 << 20;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

pub const DOCKER_SCHEMA1_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest media types berth reads, most preferred first: what a
/// registry client sends in `Accept`.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{what} {digest}: invalid JSON: {source}")]
    Json {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "manifest {digest}: schema1 manifests are not supported; the image must be pushed again \
         as Docker schema2 or OCI (any current docker, buildah or berth does that)"
    )]
    Schema1 { digest: Digest },
    #[error(
        "manifest {digest}: {why}, so it reads both as an index and as a manifest; refusing the \
         ambiguous document"
    )]
    Ambiguous { digest: Digest, why: &'static str },
    #[error("manifest {digest}: its mediaType {declared:?} differs from the media type it came with, {given:?}")]
    MediaTypeMismatch {
        digest: Digest,
        declared: String,
        given: String,
    },
    #[error("manifest {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("manifest {digest}: unsupported schemaVersion {version} (berth reads version 2)")]
    SchemaVersion { digest: Digest, version: String },
    #[error("manifest {digest}: neither an image index nor an image manifest")]
    Unrecognised { digest: Digest },
    #[error("{what} {digest}: {field}: {source}")]
    DescriptorDigest {
        what: &'static str,
        digest: Digest,
        field: String,
        #[source]
        source: DigestError,
    },
    #[error("manifest config: media type {0:?} is not a container image config")]
    NotAnImage(String),
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
    #[error("config.{field} {value:?}: must be an absolute path inside the container")]
    ConfigPath { field: &'static str, value: String },
    #[error("image config: rootfs.type {0:?} is not \"layers\"")]
    RootfsType(String),
    #[error("image config: rootfs.diff_ids[{index}]: {source}")]
    DiffId {
        index: usize,
        #[source]
        source: DigestError,
    },
    #[error(
        "image config lists {diff_ids} layers in rootfs.diff_ids but the manifest has {layers}"
    )]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("invalid platform {input:?}: {why}")]
    Platform { input: String, why: String },
    #[error("cannot encode {what}: {why}")]
    Encode { what: &'static str, why: String },
}

impl ManifestError {
    /// The user gave something invalid (a `--platform` value), rather than a
    /// registry or an archive giving bad content.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, ManifestError::Platform { .. })
    }

    /// A manifest, index or config is malformed, unsupported or unsafe.
    pub fn is_invalid_content(&self) -> bool {
        !matches!(
            self,
            ManifestError::Platform { .. } | ManifestError::Encode { .. }
        )
    }
}

/// The four kinds of manifest document berth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    OciIndex,
    OciManifest,
    DockerManifestList,
    DockerManifest,
}

impl Format {
    /// The document's own media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::OciIndex => OCI_INDEX,
            Format::OciManifest => OCI_MANIFEST,
            Format::DockerManifestList => DOCKER_MANIFEST_LIST,
            Format::DockerManifest => DOCKER_MANIFEST,
        }
    }

    /// Whether the document lists manifests (an index or a manifest list).
    pub fn is_index(self) -> bool {
        matches!(self, Format::OciIndex | Format::DockerManifestList)
    }

    /// The format of a manifest media type (parameters such as `; charset`
    /// and case are ignored).
    pub fn from_media_type(media_type: &str) -> Option<Format> {
        match normalise_media_type(media_type).as_str() {
            OCI_INDEX => Some(Format::OciIndex),
            OCI_MANIFEST => Some(Format::OciManifest),
            DOCKER_MANIFEST_LIST => Some(Format::DockerManifestList),
            DOCKER_MANIFEST => Some(Format::DockerManifest),
            _ => None,
        }
    }
}

/// A parsed manifest document, with Docker media types turned into OCI ones.
// One is made per document read, so the size of the larger variant does
// not matter, and unboxed variants are simpler to match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Index(ImageIndex),
    Manifest(ImageManifest),
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        matches!(self, Parsed::Index(_))
    }
}

/// The fields that tell the kinds of document apart. `Option<IgnoredAny>`
/// is `None` for a field that is absent or `null`; a repeated field is an
/// error.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<Value>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<IgnoredAny>,
    signatures: Option<IgnoredAny>,
}

/// Tell which kind of document `bytes` is, from its `mediaType` field, the
/// media type it came with (a `Content-Type` or a descriptor's media type;
/// generic ones such as `application/json` are ignored) and its shape, and
/// refuse what berth does not read: schema1, unknown media types,
/// documents over [`MAX_MANIFEST_SIZE`], documents whose declared and given
/// media types differ and documents that are both an index and a manifest.
pub fn detect(media_type: Option<&str>, bytes: &[u8]) -> Result<Format, ManifestError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge {
            what: "manifest",
            size: bytes.len(),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let digest = || Digest::sha256_of(bytes);
    let probe = probe(bytes).map_err(|source| ManifestError::Json {
        what: "manifest",
        digest: digest(),
        source,
    })?;

    let declared = probe.media_type.as_deref().map(normalise_media_type);
    let given = media_type
        .map(normalise_media_type)
        .filter(|m| Format::from_media_type(m).is_some() || is_schema1(m));
    let version_one = probe
        .schema_version
        .as_ref()
        .is_some_and(|v| v.as_u64() == Some(1));
    if declared.as_deref().is_some_and(is_schema1)
        || given.as_deref().is_some_and(is_schema1)
        || version_one
        || probe.fs_layers.is_some()
        || probe.signatures.is_some()
    {
        return Err(ManifestError::Schema1 { digest: digest() });
    }

    let has_manifests = probe.manifests.is_some();
    let manifest_field = if probe.layers.is_some() {
        Some("layers")
    } else if probe.config.is_some() {
        Some("config")
    } else {
        None
    };
    let ambiguous = |why| ManifestError::Ambiguous {
        digest: digest(),
        why,
    };
    match manifest_field {
        Some("layers") if has_manifests => {
            return Err(ambiguous("it has both \"manifests\" and \"layers\""))
        }
        Some(_) if has_manifests => {
            return Err(ambiguous("it has both \"manifests\" and \"config\""))
        }
        _ => {}
    }

    let declared_format = match &declared {
        Some(d) => match Format::from_media_type(d) {
            Some(f) => Some(f),
            None => {
                return Err(ManifestError::UnsupportedMediaType {
                    digest: digest(),
                    media_type: d.clone(),
                })
            }
        },
        None => None,
    };
    let given_format = given.as_deref().and_then(Format::from_media_type);
    if let (Some(d), Some(g)) = (declared_format, given_format) {
        if d != g {
            return Err(ManifestError::MediaTypeMismatch {
                digest: digest(),
                declared: d.media_type().to_string(),
                given: g.media_type().to_string(),
            });
        }
    }
    let format = match declared_format.or(given_format) {
        Some(f) => f,
        None if has_manifests => Format::OciIndex,
        None if manifest_field.is_some() => Format::OciManifest,
        None => return Err(ManifestError::Unrecognised { digest: digest() }),
    };
    // A declared index must not look like a manifest, nor the reverse.
    if format.is_index() && manifest_field.is_some() {
        return Err(ambiguous(
            "its media type is an index's but it has a manifest's \"layers\" or \"config\"",
        ));
    }
    if !format.is_index() && has_manifests {
        return Err(ambiguous(
            "its media type is a manifest's but it has an index's \"manifests\"",
        ));
    }

    if let Some(v) = &probe.schema_version {
        if v.as_u64() != Some(2) {
            return Err(ManifestError::SchemaVersion {
                digest: digest(),
                version: v.to_string(),
            });
        }
    }
    Ok(format)
}

fn probe(bytes: &[u8]) -> Result<Probe, serde_json::Error> {
    // A struct also deserialises from a JSON array; only an object is a
    // manifest.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(serde::de::Error::custom(
            "the document is not a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
}

/// Parse a manifest or an index (see [`detect`] for what is refused). Docker
/// media types are turned into OCI ones, and every descriptor's digest is
/// checked to be one berth can store (sha256 or sha512).
pub fn parse(media_type: Option<&str>, bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let format = detect(media_type, bytes)?;
    let digest = || Digest::sha256_of(bytes);
    let json = |source| ManifestError::Json {
        what: "manifest",
        digest: digest(),
        source,
    };
    let check = |d: &Descriptor, field: String| {
        descriptor_digest(d).map_err(|source| ManifestError::DescriptorDigest {
            what: "manifest",
            digest: digest(),
            field,
            source,
        })
    };
    if format.is_index() {
        let mut index: ImageIndex = serde_json::from_slice(bytes).map_err(json)?;
        index.set_media_type(Some(MediaType::ImageIndex));
        let mut manifests = index.manifests().clone();
        for (i, d) in manifests.iter_mut().enumerate() {
            check(d, format!("manifests[{i}].digest"))?;
            to_oci_descriptor(d);
        }
        index.set_manifests(manifests);
        Ok(Parsed::Index(index))
    } else {
        let mut manifest: ImageManifest = serde_json::from_slice(bytes).map_err(json)?;
        manifest.set_media_type(Some(MediaType::ImageManifest));
        let mut config = manifest.config().clone();
        check(&config, "config.digest".to_string())?;
        to_oci_descriptor(&mut config);
        manifest.set_config(config);
        for (i, d) in manifest.layers_mut().iter_mut().enumerate() {
            check(d, format!("layers[{i}].digest"))?;
            to_oci_descriptor(d);
        }
        Ok(Parsed::Manifest(manifest))
    }
}

/// A descriptor's digest as a [`Digest`] berth can build a store path from.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, DigestError> {
    d.digest().to_string().parse()
}

/// The OCI media type for a media type, Docker's schema2 ones turned into
/// their OCI equivalents and the rest kept.
pub fn oci_media_type(media_type: &str) -> MediaType {
    match media_type {
        DOCKER_MANIFEST => MediaType::ImageManifest,
        DOCKER_MANIFEST_LIST => MediaType::ImageIndex,
        DOCKER_CONFIG => MediaType::ImageConfig,
        DOCKER_LAYER => MediaType::ImageLayer,
        DOCKER_LAYER_GZIP => MediaType::ImageLayerGzip,
        DOCKER_LAYER_ZSTD => MediaType::ImageLayerZstd,
        DOCKER_FOREIGN_LAYER => MediaType::ImageLayerNonDistributable,
        DOCKER_FOREIGN_LAYER_GZIP => MediaType::ImageLayerNonDistributableGzip,
        other => MediaType::from(other),
    }
}

fn to_oci_descriptor(d: &mut Descriptor) {
    let mt = oci_media_type(d.media_type().as_ref());
    d.set_media_type(mt);
}

fn normalise_media_type(m: &str) -> String {
    m.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_schema1(m: &str) -> bool {
    m == DOCKER_SCHEMA1_MANIFEST || m == DOCKER_SCHEMA1_SIGNED_MANIFEST
}

/// Check that a manifest is a container image berth can unpack: its config
/// is an image config and every layer is a tar archive berth can
/// decompress. (Other artifacts in registries, such as Helm charts or
/// attestations, use the manifest format too.)
pub fn check_image_manifest(manifest: &ImageManifest) -> Result<(), ManifestError> {
    let config = manifest.config().media_type();
    if oci_media_type(config.as_ref()) != MediaType::ImageConfig {
        return Err(ManifestError::NotAnImage(config.to_string()));
    }
    for layer in manifest.layers() {
        layer_compression(layer.media_type().as_ref())?;
    }
    Ok(())
}

/// How a layer blob is compressed (the layer module's type, re-exported).
pub use crate::layer::Compression;

/// The compression of a layer media type, OCI or Docker (distributable or
/// not). Anything else is not a layer berth can apply.
pub fn layer_compression(media_type: &str) -> Result<Compression, ManifestError> {
    match normalise_media_type(media_type).as_str() {
        OCI_LAYER | OCI_LAYER_NONDISTRIBUTABLE | DOCKER_LAYER | DOCKER_FOREIGN_LAYER => {
            Ok(Compression::None)
        }
        OCI_LAYER_GZIP
        | OCI_LAYER_NONDISTRIBUTABLE_GZIP
        | DOCKER_LAYER_GZIP
        | DOCKER_FOREIGN_LAYER_GZIP => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_ZSTD | DOCKER_LAYER_ZSTD => {
            Ok(Compression::Zstd)
        }
        _ => Err(ManifestError::UnsupportedLayer(media_type.to_string())),
    }
}

/// The OCI layer media type for a layer berth writes.
pub fn layer_media_type(compression: Compression) -> MediaType {
    match compression {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    }
}

/// The Docker schema2 layer media type, for writers of Docker formats.
pub fn docker_layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => DOCKER_LAYER,
        Compression::Gzip => DOCKER_LAYER_GZIP,
        Compression::Zstd => DOCKER_LAYER_ZSTD,
    }
}

/// Whether a layer media type marks a layer that may not be pushed to other
/// registries (OCI nondistributable, Docker foreign).
pub fn is_nondistributable(media_type: &str) -> bool {
    matches!(
        normalise_media_type(media_type).as_str(),
        OCI_LAYER_NONDISTRIBUTABLE
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
            | DOCKER_FOREIGN_LAYER
            | DOCKER_FOREIGN_LAYER_GZIP
    )
}

// ---------------------------------------------------------------- config

/// Docker's image ID for a config: the sha256 of its exact bytes.
pub fn image_id(config_bytes: &[u8]) -> Digest {
    Digest::sha256_of(config_bytes)
}

/// Parse an image config (OCI or Docker; the two are the same document).
/// Fields oci-spec does not model (`Healthcheck`, `Shell`, `OnBuild`, …)
/// are dropped here; [`config_extras`] reads them.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ManifestError> {
    if bytes.len() > MAX_CONFIG_SIZE {
        return Err(ManifestError::TooLarge {
            what: "image config",
            size: bytes.len(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    config_json(bytes)
}

fn config_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ManifestError> {
    let json = |source| ManifestError::Json {
        what: "image config",
        digest: image_id(bytes),
        source,
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(json(serde::de::Error::custom(
            "the document is not a JSON object",
        )));
    }
    serde_json::from_slice(bytes).map_err(json)
}

/// The keys of `Config` that oci-spec models; [`config_extras`] returns the
/// others.
const MODELLED_CONFIG_KEYS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
];

/// The fields of the config's `config` object that [`ImageConfiguration`]
/// does not model: Docker's `Healthcheck`, `Shell`, `OnBuild`,
/// `ArgsEscaped` and the like, with their JSON values (`null`s left out).
pub fn config_extras(bytes: &[u8]) -> Result<Map<String, Value>, ManifestError> {
    if bytes.len() > MAX_CONFIG_SIZE {
        return Err(ManifestError::TooLarge {
            what: "image config",
            size: bytes.len(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    let doc: Map<String, Value> = config_json(bytes)?;
    let mut extras = Map::new();
    if let Some(Value::Object(config)) = doc.get("config") {
        for (k, v) in config {
            if !MODELLED_CONFIG_KEYS.contains(&k.as_str()) && !v.is_null() {
                extras.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(extras)
}

/// The layers' diff IDs (digests of the uncompressed layer tars), bottom
/// layer first.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, ManifestError> {
    let rootfs = config.rootfs();
    if rootfs.typ() != "layers" {
        return Err(ManifestError::RootfsType(rootfs.typ().clone()));
    }
    rootfs
        .diff_ids()
        .iter()
        .enumerate()
        .map(|(index, d)| {
            d.parse()
                .map_err(|source| ManifestError::DiffId { index, source })
        })
        .collect()
}

/// Check the parts of a config that later become paths in a container:
/// `WorkingDir` and the `Volumes` keys must be absolute and must not climb
/// out of the root with `..`. Also checks the diff IDs (see [`diff_ids`]).
pub fn check_config(config: &ImageConfiguration) -> Result<(), ManifestError> {
    diff_ids(config)?;
    let Some(c) = config.config() else {
        return Ok(());
    };
    if let Some(wd) = c.working_dir() {
        if !wd.is_empty() && !inside_root(wd) {
            return Err(ManifestError::ConfigPath {
                field: "WorkingDir",
                value: wd.clone(),
            });
        }
    }
    for v in c.volumes().iter().flatten() {
        if !inside_root(v) {
            return Err(ManifestError::ConfigPath {
                field: "Volumes",
                value: v.clone(),
            });
        }
    }
    Ok(())
}

/// An absolute path whose `..` components never go above `/`.
fn inside_root(p: &str) -> bool {
    if !p.starts_with('/') || p.contains('\0') {
        return false;
    }
    let mut depth = 0usize;
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

/// A config must list exactly one diff ID per manifest layer.
pub fn check_layer_count(
    config: &ImageConfiguration,
    manifest: &ImageManifest,
) -> Result<(), ManifestError> {
    let (diff_ids, layers) = (config.rootfs().diff_ids().len(), manifest.layers().len());
    if diff_ids != layers {
        return Err(ManifestError::LayerCount { diff_ids, layers });
    }
    Ok(())
}

// ---------------------------------------------------------------- platforms

/// The platform berth runs on, in the Go names images use: `linux/amd64`,
/// `linux/arm64/v8`, `linux/arm/v7`, …
pub fn host_platform() -> Platform {
    let (arch, variant) = go_arch(std::env::consts::ARCH, cfg!(target_endian = "little"));
    let mut p = Platform::default();
    p.set_os(Os::from(std::env::consts::OS));
    p.set_architecture(Arch::from(arch));
    p.set_variant(variant.map(str::to_string));
    p
}

/// Go's GOARCH (and the variant Docker assumes) for a Rust target arch.
fn go_arch(rust_arch: &str, little_endian: bool) -> (&str, Option<&'static str>) {
    let arch = match (rust_arch, little_endian) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", _) => return ("arm64", Some("v8")),
        // Rust's "arm" covers v6 and v7; v7 is what Docker assumes too.
        ("arm", _) => return ("arm", Some("v7")),
        ("powerpc64", true) => "ppc64le",
        ("powerpc64", false) => "ppc64",
        ("powerpc", _) => "ppc",
        ("mips", true) => "mipsle",
        ("mips64", true) => "mips64le",
        ("loongarch64", _) => "loong64",
        ("wasm32", _) => "wasm",
        (other, _) => other,
    };
    (arch, None)
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// Parse a `--platform` value: `os[/arch[/variant]]`, or an architecture or
/// an OS alone (`arm64` is `linux/arm64`, `linux` is the host's
/// architecture on linux). Names are normalised as Docker does (`x86_64` is
/// `amd64`, `aarch64` is `arm64`, `armhf` is `arm/v7`, `arm64` has the
/// variant `v8` when one is given or implied).
pub fn parse_platform(s: &str) -> Result<Platform, ManifestError> {
    let fail = |why: &str| ManifestError::Platform {
        input: s.to_string(),
        why: why.to_string(),
    };
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 3 {
        return Err(fail("expected os[/arch[/variant]]"));
    }
    let valid = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if !parts.iter().all(valid) {
        return Err(fail(
            "expected os[/arch[/variant]] of letters, digits, '_', '.' and '-'",
        ));
    }
    let os = normalise_os(parts[0]);
    let (os, arch, variant) = match parts[..] {
        [_] if KNOWN_OS.contains(&os.as_str()) => {
            let host = host_platform();
            (
                os,
                host.architecture().to_string(),
                host.variant().clone().unwrap_or_default(),
            )
        }
        [one] => {
            let (arch, variant) = normalise_arch(one, "");
            if !KNOWN_ARCH.contains(&arch.as_str()) {
                return Err(fail("unknown operating system or architecture"));
            }
            (std::env::consts::OS.to_string(), arch, variant)
        }
        [_, arch] => {
            let (arch, variant) = normalise_arch(arch, "");
            (os, arch, variant)
        }
        [_, arch, variant] => {
            let (arch, variant) = normalise_arch(arch, variant);
            (os, arch, variant)
        }
        _ => return Err(fail("expected os[/arch[/variant]]")),
    };
    // Show arm64 with its default variant, arm without it (as Docker does).
    let variant = match (arch.as_str(), variant.as_str()) {
        ("arm64", "") if parts.len() == 3 => "v8".to_string(),
        ("arm", "v7") if parts.len() < 3 => String::new(),
        _ => variant,
    };
    let mut p = Platform::default();
    p.set_os(Os::from(os.as_str()));
    p.set_architecture(Arch::from(arch.as_str()));
    p.set_variant((!variant.is_empty()).then_some(variant));
    Ok(p)
}

/// `os/arch[/variant]`, as `--platform` takes and Docker shows it.
pub fn platform_string(p: &Platform) -> String {
    match p.variant().as_deref() {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os(), p.architecture()),
        _ => format!("{}/{}", p.os(), p.architecture()),
    }
}

fn normalise_os(os: &str) -> String {
    match os.to_ascii_lowercase().as_str() {
        "" => std::env::consts::OS.to_string(),
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

/// Docker's (containerd's) normal form of an architecture and variant: the
/// default variant of each architecture is spelt one way (`arm64` with no
/// variant, `arm` with `v7`, `amd64` with no variant).
fn normalise_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (a, v): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_string(),
                _ => variant,
            },
        ),
        "armhf" => ("arm", "v7".to_string()),
        "armel" => ("arm", "v6".to_string()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => return (arch, variant),
    };
    (a.to_string(), v)
}

/// A platform in normal form, for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Norm {
    os: String,
    arch: String,
    variant: String,
}

impl Norm {
    fn of(p: &Platform) -> Norm {
        let (arch, variant) = normalise_arch(
            &p.architecture().to_string(),
            p.variant().as_deref().unwrap_or(""),
        );
        Norm {
            os: normalise_os(&p.os().to_string()),
            arch,
            variant,
        }
    }

    fn with(&self, arch: &str, variant: &str) -> Norm {
        let (arch, variant) = normalise_arch(arch, variant);
        Norm {
            os: self.os.clone(),
            arch,
            variant,
        }
    }
}

/// The platforms that can run on `want`, best first, as Docker orders them:
/// the platform itself, then older variants of its architecture (amd64 v3 →
/// v2 → v1, arm v7 → v6 → v5), then the 32-bit architecture it also runs
/// (amd64 → 386, arm64 → arm v8 … v5).
fn candidates(want: &Norm) -> Vec<Norm> {
    let version = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    let mut out = vec![want.clone()];
    match want.arch.as_str() {
        "amd64" => {
            if let Some(n) = version(&want.variant) {
                out.extend((1..n).rev().map(|k| want.with("amd64", &format!("v{k}"))));
            }
            out.push(want.with("386", ""));
        }
        "arm" => {
            if let Some(n) = version(&want.variant) {
                out.extend((5..n).rev().map(|k| want.with("arm", &format!("v{k}"))));
            }
        }
        "arm64" => {
            let variant = if want.variant.is_empty() {
                "v8"
            } else {
                want.variant.as_str()
            };
            out = arm64_versions(variant)
                .into_iter()
                .map(|v| want.with("arm64", &v))
                .collect();
            if out.is_empty() {
                out.push(want.clone());
            }
            if variant.starts_with("v8") || variant.starts_with("v9") {
                out.extend((5..=8).rev().map(|k| want.with("arm", &format!("v{k}"))));
            }
        }
        _ => {}
    }
    out
}

/// The arm64 variants a CPU of `variant` runs, newest first: v8.2 runs v8.2,
/// v8.1 and v8; v9.x runs v9.x … v9 and then v8.(x+5) … v8.
fn arm64_versions(variant: &str) -> Vec<String> {
    let Some(rest) = variant.strip_prefix('v') else {
        return Vec::new();
    };
    let (major, minor) = match rest.split_once('.') {
        Some((a, b)) => (a.parse::<u32>().ok(), b.parse::<u32>().ok()),
        None => (rest.parse::<u32>().ok(), Some(0)),
    };
    let spell = |major: u32, minor: u32| {
        if minor == 0 {
            format!("v{major}")
        } else {
            format!("v{major}.{minor}")
        }
    };
    match (major, minor) {
        (Some(8), Some(minor)) if minor <= 9 => (0..=minor).rev().map(|m| spell(8, m)).collect(),
        (Some(9), Some(minor)) if minor <= 7 => (0..=minor)
            .rev()
            .map(|m| spell(9, m))
            .chain((0..=(minor + 5).min(9)).rev().map(|m| spell(8, m)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Pick the manifest for `want` from an index, as Docker does: the best of
/// the entries whose platform runs on `want` (an exact match first, then
/// older variants and compatible architectures, see above; among equals the
/// first in the index), or else the first entry with no platform at all.
/// Entries for other platforms (and `unknown/unknown` attestations) never
/// match.
pub fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    let want_features = want.os_features().clone().unwrap_or_default();
    let order = candidates(&Norm::of(want));
    let mut best: Option<(usize, &Descriptor)> = None;
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        // Entries that need OS features must find them all in `want`.
        let features_ok = p
            .os_features()
            .iter()
            .flatten()
            .all(|f| want_features.contains(f));
        if !features_ok {
            continue;
        }
        let have = Norm::of(p);
        if let Some(rank) = order.iter().position(|c| *c == have) {
            let better = match best {
                Some((r, _)) => rank < r,
                None => true,
            };
            if better {
                best = Some((rank, d));
            }
        }
    }
    best.map(|(_, d)| d)
        .or_else(|| index.manifests().iter().find(|d| d.platform().is_none()))
}

// ---------------------------------------------------------------- writing

/// A document berth wrote: its exact bytes and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: MediaType,
}

impl Encoded {
    /// The descriptor that points at this document.
    pub fn descriptor(&self) -> Result<Descriptor, ManifestError> {
        descriptor(
            self.media_type.clone(),
            &self.digest,
            self.bytes.len() as u64,
        )
    }
}

/// A descriptor for a blob.
pub fn descriptor(
    media_type: MediaType,
    digest: &Digest,
    size: u64,
) -> Result<Descriptor, ManifestError> {
    let oci = oci_spec::image::Digest::from_str(&digest.to_string()).map_err(|e| {
        ManifestError::Encode {
            what: "descriptor",
            why: e.to_string(),
        }
    })?;
    Ok(Descriptor::new(media_type, size, oci))
}

/// An OCI image manifest for a config and layers (bottom layer first).
pub fn new_manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
) -> Result<ImageManifest, ManifestError> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| ManifestError::Encode {
            what: "manifest",
            why: e.to_string(),
        })
}

/// An OCI image index of manifests (each descriptor should carry its
/// platform).
pub fn new_index(manifests: Vec<Descriptor>) -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_schema_version(2);
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(manifests);
    index
}

/// JSON with object keys sorted at every level and no whitespace: the same
/// value always gives the same bytes.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&sorted(serde_json::to_value(value)?))
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn encode<T: serde::Serialize>(
    what: &'static str,
    value: &T,
    media_type: MediaType,
) -> Result<Encoded, ManifestError> {
    let bytes = canonical_json(value).map_err(|e| ManifestError::Encode {
        what,
        why: e.to_string(),
    })?;
    Ok(Encoded {
        digest: Digest::sha256_of(&bytes),
        bytes,
        media_type,
    })
}

/// Encode a manifest berth wrote (see [`new_manifest`]).
pub fn encode_manifest(manifest: &ImageManifest) -> Result<Encoded, ManifestError> {
    encode("manifest", manifest, MediaType::ImageManifest)
}

/// Encode an index berth wrote (see [`new_index`]).
pub fn encode_index(index: &ImageIndex) -> Result<Encoded, ManifestError> {
    encode("index", index, MediaType::ImageIndex)
}

/// Encode an image config; its digest is the image ID.
pub fn encode_config(config: &ImageConfiguration) -> Result<Encoded, ManifestError> {
    encode_config_with_extras(config, &Map::new())
}

/// Encode an image config with fields oci-spec does not model added to its
/// `config` object (`Healthcheck`, `Shell`, `OnBuild`, … as
/// [`config_extras`] returns them). A modelled field wins over an extra of
/// the same name.
pub fn encode_config_with_extras(
    config: &ImageConfiguration,
    extras: &Map<String, Value>,
) -> Result<Encoded, ManifestError> {
    let err = |why: String| ManifestError::Encode {
        what: "image config",
        why,
    };
    let mut doc = serde_json::to_value(config).map_err(|e| err(e.to_string()))?;
    if !extras.is_empty() {
        let Value::Object(top) = &mut doc else {
            return Err(err("the config is not a JSON object".to_string()));
        };
        let inner = top
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = inner else {
            return Err(err("its \"config\" is not a JSON object".to_string()));
        };
        for (k, v) in extras {
            if !MODELLED_CONFIG_KEYS.contains(&k.as_str()) {
                inner.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    encode("image config", &doc, MediaType::ImageConfig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder, RootFsBuilder};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const D4: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
    const D5: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
    const D6: &str = "sha256:6666666666666666666666666666666666666666666666666666666666666666";

    fn docker_manifest_list() -> String {
        format!(
            r#"{{
   "manifests": [
      {{
         "digest": "{D1}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "amd64", "os": "linux" }},
         "size": 528
      }},
      {{
         "digest": "{D2}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "arm", "os": "linux", "variant": "v5" }},
         "size": 528
      }},
      {{
         "digest": "{D3}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "arm", "os": "linux", "variant": "v7" }},
         "size": 528
      }},
      {{
         "digest": "{D4}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "arm64", "os": "linux", "variant": "v8" }},
         "size": 528
      }},
      {{
         "digest": "{D5}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "386", "os": "linux" }},
         "size": 528
      }},
      {{
         "digest": "{D6}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{ "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1879" }},
         "size": 1125
      }}
   ],
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "schemaVersion": 2
}}"#
        )
    }

    fn oci_index() -> String {
        format!(
            r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{D1}",
      "size": 1013,
      "platform": {{ "architecture": "amd64", "os": "linux" }}
    }},
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{D2}",
      "size": 1013,
      "platform": {{ "architecture": "arm64", "os": "linux" }}
    }},
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{D3}",
      "size": 566,
      "annotations": {{
        "vnd.docker.reference.digest": "{D1}",
        "vnd.docker.reference.type": "attestation-manifest"
      }},
      "platform": {{ "architecture": "unknown", "os": "unknown" }}
    }}
  ],
  "annotations": {{ "org.opencontainers.image.ref.name": "1.0" }}
}}"#
        )
    }

    fn docker_manifest() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1469,
      "digest": "{D1}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2814446,
         "digest": "{D2}"
      }},
      {{
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1048576,
         "digest": "{D3}",
         "urls": ["https://example.com/layer.tar.gz"]
      }}
   ]
}}"#
        )
    }

    fn oci_manifest() -> String {
        format!(
            r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {{
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "{D1}",
    "size": 7023
  }},
  "layers": [
    {{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "{D2}", "size": 32654 }},
    {{ "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "{D3}", "size": 16724 }},
    {{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "{D4}", "size": 73109 }}
  ],
  "annotations": {{ "com.example.key1": "value1" }}
}}"#
        )
    }

    fn docker_config() -> String {
        format!(
            r#"{{"architecture":"amd64","config":{{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"Healthcheck":{{"Test":["CMD-SHELL","true"],"Interval":30000000000}},"Image":"sha256:aaaa","Volumes":{{"/data":{{}}}},"WorkingDir":"/srv","Entrypoint":null,"OnBuild":null,"Labels":null,"Shell":["/bin/ash","-c"]}},"created":"2024-01-27T00:31:00.123Z","history":[{{"created":"2024-01-27T00:30:59Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "}},{{"created":"2024-01-27T00:31:00Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["{D2}","{D3}"]}}}}"#
        )
    }

    fn oci_config() -> String {
        format!(
            r#"{{
  "created": "2015-10-31T22:22:56.015925234Z",
  "author": "Alyssa P. Hacker <alyspdev@example.com>",
  "architecture": "arm64",
  "variant": "v8",
  "os": "linux",
  "config": {{
    "User": "alice",
    "ExposedPorts": {{ "8080/tcp": {{}} }},
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=oci_is_a"],
    "Entrypoint": ["/bin/my-app-binary"],
    "Cmd": ["--foreground", "--config", "/etc/my-app.d/default.cfg"],
    "Volumes": {{ "/var/job-result-data": {{}}, "/var/log/my-app-logs": {{}} }},
    "WorkingDir": "/home/alice",
    "Labels": {{ "com.example.project.git.url": "https://example.com/project.git" }}
  }},
  "rootfs": {{ "diff_ids": ["{D2}", "{D3}", "{D4}"], "type": "layers" }},
  "history": [
    {{ "created": "2015-10-31T22:22:54.690851953Z", "created_by": "/bin/sh -c #(nop) ADD file:a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /" }},
    {{ "created": "2015-10-31T22:22:55.613815829Z", "created_by": "/bin/sh -c #(nop) CMD [\"sh\"]", "empty_layer": true }}
  ]
}}"#
        )
    }

    fn manifest_of(p: Parsed) -> ImageManifest {
        match p {
            Parsed::Manifest(m) => m,
            Parsed::Index(_) => panic!("expected a manifest"),
        }
    }

    fn index_of(p: Parsed) -> ImageIndex {
        match p {
            Parsed::Index(i) => i,
            Parsed::Manifest(_) => panic!("expected an index"),
        }
    }

    #[test]
    fn docker_manifest_list_reads_as_oci_index() {
        let doc = docker_manifest_list();
        assert_eq!(
            detect(None, doc.as_bytes()).unwrap(),
            Format::DockerManifestList
        );
        let index = index_of(parse(Some(DOCKER_MANIFEST_LIST), doc.as_bytes()).unwrap());
        assert_eq!(index.media_type(), &Some(MediaType::ImageIndex));
        assert_eq!(index.manifests().len(), 6);
        for d in index.manifests() {
            assert_eq!(d.media_type(), &MediaType::ImageManifest);
        }
        let arm = index.manifests()[2].platform().as_ref().unwrap();
        assert_eq!(platform_string(arm), "linux/arm/v7");
    }

    #[test]
    fn oci_index_reads() {
        let doc = oci_index();
        assert_eq!(detect(None, doc.as_bytes()).unwrap(), Format::OciIndex);
        let index = index_of(parse(None, doc.as_bytes()).unwrap());
        assert_eq!(index.manifests().len(), 3);
        assert_eq!(
            descriptor_digest(&index.manifests()[1])
                .unwrap()
                .to_string(),
            D2
        );
    }

    #[test]
    fn docker_manifest_reads_as_oci_manifest() {
        let doc = docker_manifest();
        assert_eq!(
            detect(None, doc.as_bytes()).unwrap(),
            Format::DockerManifest
        );
        let m = manifest_of(
            parse(
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                doc.as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(m.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(m.config().media_type(), &MediaType::ImageConfig);
        assert_eq!(m.layers()[0].media_type(), &MediaType::ImageLayerGzip);
        assert_eq!(
            m.layers()[1].media_type(),
            &MediaType::ImageLayerNonDistributableGzip
        );
        assert!(is_nondistributable(m.layers()[1].media_type().as_ref()));
        assert_eq!(m.layers()[1].urls().as_ref().unwrap().len(), 1);
        check_image_manifest(&m).unwrap();
    }

    #[test]
    fn oci_manifest_reads() {
        let doc = oci_manifest();
        assert_eq!(
            detect(Some(OCI_MANIFEST), doc.as_bytes()).unwrap(),
            Format::OciManifest
        );
        let m = manifest_of(parse(None, doc.as_bytes()).unwrap());
        let compressions: Vec<Compression> = m
            .layers()
            .iter()
            .map(|l| layer_compression(l.media_type().as_ref()).unwrap())
            .collect();
        assert_eq!(
            compressions,
            [Compression::Gzip, Compression::Zstd, Compression::None]
        );
        check_image_manifest(&m).unwrap();
    }

    #[test]
    fn shape_decides_without_media_types() {
        let no_type = oci_manifest().replace(
            r#""mediaType": "application/vnd.oci.image.manifest.v1+json","#,
            "",
        );
        assert_eq!(
            detect(None, no_type.as_bytes()).unwrap(),
            Format::OciManifest
        );
        // A generic content type is ignored; a manifest one is believed.
        assert_eq!(
            detect(Some("application/json"), no_type.as_bytes()).unwrap(),
            Format::OciManifest
        );
        assert_eq!(
            detect(Some(DOCKER_MANIFEST), no_type.as_bytes()).unwrap(),
            Format::DockerManifest
        );
        let no_type = oci_index().replacen(
            r#""mediaType": "application/vnd.oci.image.index.v1+json","#,
            "",
            1,
        );
        assert_eq!(detect(None, no_type.as_bytes()).unwrap(), Format::OciIndex);
    }

    #[test]
    fn manifest_digest_is_of_the_exact_bytes() {
        let doc = docker_manifest();
        let err = parse(None, b"{\"schemaVersion\": 1}").unwrap_err();
        assert!(err
            .to_string()
            .contains(&Digest::sha256_of(b"{\"schemaVersion\": 1}").to_string()));
        // Parsing does not depend on whitespace, the digest does.
        let compact: Value = serde_json::from_str(&doc).unwrap();
        let compact = serde_json::to_vec(&compact).unwrap();
        assert_eq!(
            parse(None, doc.as_bytes()).unwrap(),
            parse(None, &compact).unwrap()
        );
        assert_ne!(
            Digest::sha256_of(doc.as_bytes()),
            Digest::sha256_of(&compact)
        );
    }

    #[test]
    fn schema1_is_refused() {
        let signed = r#"{
   "schemaVersion": 1,
   "name": "library/hello-world",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      { "blobSum": "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef" }
   ],
   "history": [ { "v1Compatibility": "{\"id\":\"e45a5af57b00862e5ef5782a9925979a02ba2b12dff832fd0991335f4a11e5c5\"}" } ],
   "signatures": [ { "header": { "alg": "ES256" }, "signature": "abc", "protected": "def" } ]
}"#;
        for (mt, doc) in [
            (None, signed),
            (Some(DOCKER_SCHEMA1_SIGNED_MANIFEST), signed),
            (Some(DOCKER_SCHEMA1_MANIFEST), "{}"),
            (
                None,
                r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#,
            ),
            (
                None,
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}"#,
            ),
        ] {
            let err = parse(mt, doc.as_bytes()).unwrap_err();
            assert!(matches!(err, ManifestError::Schema1 { .. }), "{err}");
            assert!(err
                .to_string()
                .contains("schema1 manifests are not supported; "));
        }
    }

    #[test]
    fn index_and_manifest_hybrid_is_refused() {
        let hybrid = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
                "config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":2}},
                "layers":[],
                "manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":3}}]}}"#
        );
        for mt in [None, Some(OCI_MANIFEST), Some(OCI_INDEX)] {
            let err = parse(mt, hybrid.as_bytes()).unwrap_err();
            assert!(matches!(err, ManifestError::Ambiguous { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains("it has both \"manifests\" and \"layers\""),
                "{err}"
            );
        }
        // Without a mediaType field, too, and with only "config" beside "manifests".
        let hybrid = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":2}},
                "manifests":[]}}"#
        );
        assert!(matches!(
            parse(None, hybrid.as_bytes()),
            Err(ManifestError::Ambiguous {
                why: "it has both \"manifests\" and \"config\"",
                ..
            })
        ));
        // An index that declares itself a manifest.
        let liar = oci_index().replace(OCI_INDEX, OCI_MANIFEST);
        assert!(matches!(
            parse(None, liar.as_bytes()),
            Err(ManifestError::Ambiguous { .. })
        ));
        // A manifest that declares itself an index.
        let liar = oci_manifest().replacen(OCI_MANIFEST, OCI_INDEX, 1);
        let err = parse(None, liar.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "manifest {}: its media type is an index's but it has a manifest's \"layers\" or \
                 \"config\", so it reads both as an index and as a manifest; refusing the \
                 ambiguous document",
                Digest::sha256_of(liar.as_bytes())
            )
        );
    }

    #[test]
    fn oversize_is_refused() {
        let mut doc = oci_manifest().into_bytes();
        doc.resize(MAX_MANIFEST_SIZE + 1, b' ');
        let err = parse(None, &doc).unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "manifest of {} bytes is over the limit of 4194304 bytes",
                MAX_MANIFEST_SIZE + 1
            )
        );
        // At the limit it is fine.
        doc.truncate(MAX_MANIFEST_SIZE);
        parse(None, &doc).unwrap();

        let mut config = oci_config().into_bytes();
        config.resize(MAX_CONFIG_SIZE + 1, b' ');
        assert!(matches!(
            parse_config(&config),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn other_bad_documents() {
        let digest_of = |s: &str| Digest::sha256_of(s.as_bytes());
        // Declared and given media types differ.
        let doc = docker_manifest();
        let err = parse(Some(OCI_MANIFEST), doc.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ManifestError::MediaTypeMismatch { .. }),
            "{err}"
        );
        // Unknown document media type.
        let doc = oci_manifest().replacen(
            OCI_MANIFEST,
            "application/vnd.oci.artifact.manifest.v1+json",
            1,
        );
        let err = parse(None, doc.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ManifestError::UnsupportedMediaType { .. }),
            "{err}"
        );
        // schemaVersion 3.
        let doc = oci_manifest().replace("\"schemaVersion\": 2", "\"schemaVersion\": 3");
        let err = parse(None, doc.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::SchemaVersion { .. }), "{err}");
        // Neither kind.
        let err = parse(None, b"{\"schemaVersion\":2}").unwrap_err();
        assert!(matches!(err, ManifestError::Unrecognised { .. }), "{err}");
        // Not JSON, not an object, a repeated field.
        for bad in [
            "",
            "nope",
            "[2, null, null]",
            "{\"layers\":[],\"layers\":[]}",
        ] {
            let err = parse(None, bad.as_bytes()).unwrap_err();
            assert!(matches!(err, ManifestError::Json { .. }), "{bad}: {err}");
            assert!(err
                .to_string()
                .starts_with(&format!("manifest {}: invalid JSON: ", digest_of(bad))));
        }
        // A required field missing.
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":2}}}}"#
        );
        assert!(matches!(
            parse(None, doc.as_bytes()),
            Err(ManifestError::Json { .. })
        ));
        // A digest berth cannot store (sha384) and a malformed one.
        let sha384 = format!("sha384:{}", "a".repeat(96));
        let doc = oci_manifest().replace(D3, &sha384);
        let err = parse(None, doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::DescriptorDigest { field, .. } if field == "layers[1].digest"),
            "{err}"
        );
        let doc = oci_manifest().replace(D3, "sha256:../../etc/passwd");
        assert!(parse(None, doc.as_bytes()).is_err());
    }

    #[test]
    fn image_manifest_check() {
        let helm = oci_manifest().replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        let m = manifest_of(parse(None, helm.as_bytes()).unwrap());
        assert!(matches!(
            check_image_manifest(&m),
            Err(ManifestError::NotAnImage(_))
        ));
        let attestation = oci_manifest().replace(OCI_LAYER_GZIP, "application/vnd.in-toto+json");
        let m = manifest_of(parse(None, attestation.as_bytes()).unwrap());
        let err = check_image_manifest(&m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported layer media type \"application/vnd.in-toto+json\""
        );
    }

    #[test]
    fn compression_both_ways() {
        for (mt, c) in [
            (OCI_LAYER, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (OCI_LAYER_ZSTD, Compression::Zstd),
            (OCI_LAYER_NONDISTRIBUTABLE, Compression::None),
            (OCI_LAYER_NONDISTRIBUTABLE_GZIP, Compression::Gzip),
            (OCI_LAYER_NONDISTRIBUTABLE_ZSTD, Compression::Zstd),
            (DOCKER_LAYER, Compression::None),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_ZSTD, Compression::Zstd),
            (DOCKER_FOREIGN_LAYER, Compression::None),
            (DOCKER_FOREIGN_LAYER_GZIP, Compression::Gzip),
        ] {
            assert_eq!(layer_compression(mt).unwrap(), c, "{mt}");
            assert_eq!(
                layer_compression(oci_media_type(mt).as_ref()).unwrap(),
                c,
                "{mt}"
            );
        }
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(layer_compression(layer_media_type(c).as_ref()).unwrap(), c);
            assert_eq!(layer_compression(docker_layer_media_type(c)).unwrap(), c);
        }
        assert_eq!(layer_media_type(Compression::Gzip).as_ref(), OCI_LAYER_GZIP);
        assert!(layer_compression(OCI_CONFIG).is_err());
    }

    #[test]
    fn configs_read_both_ways() {
        let docker = docker_config();
        let c = parse_config(docker.as_bytes()).unwrap();
        assert_eq!(
            image_id(docker.as_bytes()),
            Digest::sha256_of(docker.as_bytes())
        );
        assert_eq!(
            diff_ids(&c)
                .unwrap()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>(),
            [D2, D3]
        );
        check_config(&c).unwrap();
        let inner = c.config().as_ref().unwrap();
        assert_eq!(inner.cmd().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(inner.working_dir().as_deref(), Some("/srv"));
        let extras = config_extras(docker.as_bytes()).unwrap();
        let mut keys: Vec<&str> = extras.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "AttachStdin",
                "Domainname",
                "Healthcheck",
                "Hostname",
                "Image",
                "Shell"
            ]
        );

        let oci = oci_config();
        let c = parse_config(oci.as_bytes()).unwrap();
        assert_eq!(c.architecture(), &Arch::ARM64);
        assert_eq!(diff_ids(&c).unwrap().len(), 3);
        check_config(&c).unwrap();
        let m = manifest_of(parse(None, oci_manifest().as_bytes()).unwrap());
        check_layer_count(&c, &m).unwrap();
        let m = manifest_of(parse(None, docker_manifest().as_bytes()).unwrap());
        let err = check_layer_count(&c, &m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image config lists 3 layers in rootfs.diff_ids but the manifest has 2"
        );

        assert!(matches!(
            parse_config(b"[]"),
            Err(ManifestError::Json {
                what: "image config",
                ..
            })
        ));
        assert!(parse_config(b"{\"os\":\"linux\"}").is_err());
    }

    fn config_with(working_dir: Option<&str>, volumes: &[&str]) -> ImageConfiguration {
        let mut b = ConfigBuilder::default();
        if let Some(wd) = working_dir {
            b = b.working_dir(wd.to_string());
        }
        if !volumes.is_empty() {
            b = b.volumes(volumes.iter().map(|v| v.to_string()).collect::<Vec<_>>());
        }
        ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(b.build().unwrap())
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![D2.to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn config_paths_are_checked() {
        for wd in ["/", "/srv", "/a/../b", "/a/./b/", "//x", ""] {
            check_config(&config_with(Some(wd), &[])).unwrap_or_else(|e| panic!("{wd}: {e}"));
        }
        for wd in ["../../etc", "srv", "/..", "/a/../../etc", "/a/\0"] {
            let err = check_config(&config_with(Some(wd), &[])).unwrap_err();
            assert!(
                matches!(
                    err,
                    ManifestError::ConfigPath {
                        field: "WorkingDir",
                        ..
                    }
                ),
                "{wd}"
            );
        }
        assert_eq!(
            check_config(&config_with(Some("../../etc"), &[]))
                .unwrap_err()
                .to_string(),
            "config.WorkingDir \"../../etc\": must be an absolute path inside the container"
        );
        check_config(&config_with(None, &["/data", "/var/lib/x"])).unwrap();
        let err = check_config(&config_with(None, &["/data", "/../../host"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.Volumes \"/../../host\": must be an absolute path inside the container"
        );
        assert!(check_config(&config_with(None, &["data"])).is_err());
        assert!(check_config(&config_with(None, &[""])).is_err());

        let mut bad_ids = config_with(None, &[]);
        bad_ids
            .rootfs_mut()
            .set_diff_ids(vec![D2.to_string(), "sha256:nope".to_string()]);
        let err = check_config(&bad_ids).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image config: rootfs.diff_ids[1]: "),
            "{err}"
        );
        let mut bad_type = config_with(None, &[]);
        bad_type.rootfs_mut().set_typ("layers+base".to_string());
        assert!(matches!(
            check_config(&bad_type),
            Err(ManifestError::RootfsType(_))
        ));
    }

    fn plat(s: &str) -> Platform {
        parse_platform(s).unwrap()
    }

    fn index_with(platforms: &[Option<&str>]) -> ImageIndex {
        let manifests = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let digest = Digest::sha256_of(i.to_string().as_bytes());
                let mut d = descriptor(MediaType::ImageManifest, &digest, 100).unwrap();
                if let Some(p) = p {
                    let parts: Vec<&str> = p.split('/').collect();
                    let mut platform = Platform::default();
                    platform.set_os(Os::from(parts[0]));
                    platform.set_architecture(Arch::from(parts[1]));
                    platform.set_variant(parts.get(2).map(|v| v.to_string()));
                    d.set_platform(Some(platform));
                }
                d
            })
            .collect();
        new_index(manifests)
    }

    fn pick(index: &ImageIndex, want: &str) -> Option<usize> {
        let d = select_platform(index, &plat(want))?;
        index.manifests().iter().position(|m| std::ptr::eq(m, d))
    }

    #[test]
    fn platform_selection() {
        let list = [
            Some("linux/amd64"),
            Some("linux/arm/v5"),
            Some("linux/arm/v7"),
            Some("linux/arm64/v8"),
            Some("linux/386"),
            Some("windows/amd64"),
            Some("unknown/unknown"),
            Some("linux/riscv64"),
        ];
        let index = index_with(&list);
        for (want, expect) in [
            ("linux/amd64", Some(0)),
            ("amd64", Some(0)),
            ("linux/x86_64", Some(0)),
            ("linux/amd64/v3", Some(0)),
            ("linux/386", Some(4)),
            ("linux/arm64", Some(3)),
            ("linux/arm64/v8", Some(3)),
            ("linux/aarch64", Some(3)),
            ("linux/arm64/v8.2", Some(3)),
            ("linux/arm", Some(2)),
            ("linux/arm/v7", Some(2)),
            ("linux/armhf", Some(2)),
            ("linux/arm/v6", Some(1)),
            ("linux/armel", Some(1)),
            ("linux/arm/v5", Some(1)),
            ("windows/amd64", Some(5)),
            ("linux/riscv64", Some(7)),
            ("linux/s390x", None),
            ("linux/ppc64le", None),
            ("darwin/arm64", None),
        ] {
            assert_eq!(pick(&index, want), expect, "{want}");
        }

        // Fallbacks: arm64 runs arm, amd64 runs 386, newer variants older ones.
        let index = index_with(&[
            Some("linux/arm/v6"),
            Some("linux/arm/v7"),
            Some("linux/386"),
        ]);
        assert_eq!(pick(&index, "linux/arm64"), Some(1));
        assert_eq!(pick(&index, "linux/amd64"), Some(2));
        assert_eq!(pick(&index, "linux/arm/v6"), Some(0));
        let index = index_with(&[Some("linux/amd64/v2"), Some("linux/amd64")]);
        assert_eq!(pick(&index, "linux/amd64/v3"), Some(0));
        assert_eq!(pick(&index, "linux/amd64"), Some(1));
        let index = index_with(&[Some("linux/arm64/v8"), Some("linux/arm64/v9")]);
        assert_eq!(pick(&index, "linux/arm64/v9"), Some(1));
        assert_eq!(pick(&index, "linux/arm64/v8.5"), Some(0));
        // The first of equals wins; an entry without a platform is the last resort.
        let index = index_with(&[Some("linux/arm64"), Some("linux/arm64/v8")]);
        assert_eq!(pick(&index, "linux/arm64"), Some(0));
        let index = index_with(&[Some("linux/s390x"), None]);
        assert_eq!(pick(&index, "linux/amd64"), Some(1));
        assert_eq!(pick(&index, "linux/s390x"), Some(0));
        // A Docker manifest list behaves the same.
        let list = index_of(parse(None, docker_manifest_list().as_bytes()).unwrap());
        let d = select_platform(&list, &plat("linux/arm64")).unwrap();
        assert_eq!(descriptor_digest(d).unwrap().to_string(), D4);
        let d = select_platform(&list, &plat("windows/amd64")).unwrap();
        assert_eq!(descriptor_digest(d).unwrap().to_string(), D6);
        // Attestations never match.
        let oci = index_of(parse(None, oci_index().as_bytes()).unwrap());
        let d = select_platform(&oci, &plat("linux/amd64")).unwrap();
        assert_eq!(descriptor_digest(d).unwrap().to_string(), D1);
        assert!(select_platform(&oci, &plat("linux/s390x")).is_none());
    }

    #[test]
    fn platform_strings() {
        for (input, shown) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/aarch64/v8", "linux/arm64/v8"),
            ("linux/arm64/v9.0", "linux/arm64/v9"),
            ("linux/arm", "linux/arm"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Linux/AMD64", "linux/amd64"),
            ("arm64", "linux/arm64"),
            ("s390x", "linux/s390x"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(platform_string(&plat(input)), shown, "{input}");
        }
        assert_eq!(plat("linux"), host_platform());
        for bad in [
            "",
            "/",
            "linux/",
            "linux//v7",
            "a/b/c/d",
            "nonsense",
            "linux/amd64 ",
            "linux/arm64/v8/x",
            "windows(10.0)/amd64",
        ] {
            let err = parse_platform(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid platform {bad:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn host_platform_uses_go_names() {
        assert_eq!(go_arch("x86_64", true), ("amd64", None));
        assert_eq!(go_arch("aarch64", true), ("arm64", Some("v8")));
        assert_eq!(go_arch("arm", true), ("arm", Some("v7")));
        assert_eq!(go_arch("x86", true), ("386", None));
        assert_eq!(go_arch("powerpc64", true), ("ppc64le", None));
        assert_eq!(go_arch("powerpc64", false), ("ppc64", None));
        assert_eq!(go_arch("s390x", false), ("s390x", None));
        assert_eq!(go_arch("riscv64", true), ("riscv64", None));
        assert_eq!(go_arch("loongarch64", true), ("loong64", None));
        let host = host_platform();
        assert_eq!(host.os(), &Os::Linux);
        assert!(!host.architecture().to_string().contains('_'));
        // The host's own platform is what it selects.
        let index = index_with(&[Some("linux/s390x"), Some(&platform_string(&host))]);
        assert_eq!(pick(&index, &platform_string(&host)), Some(1));
    }

    #[test]
    fn writing_is_deterministic_and_reads_back() {
        let layer_digests = [D2, D3];
        let layers: Vec<Descriptor> = layer_digests
            .iter()
            .map(|d| {
                descriptor(
                    layer_media_type(Compression::Gzip),
                    &d.parse().unwrap(),
                    1234,
                )
                .unwrap()
            })
            .collect();
        let config = config_with(Some("/srv"), &["/b", "/a", "/c"]);
        let mut labels = std::collections::HashMap::new();
        for i in 0..20 {
            labels.insert(format!("label{i}"), i.to_string());
        }
        let mut config = config;
        let mut inner = config.config().clone().unwrap();
        inner.set_labels(Some(labels));
        config.set_config(Some(inner));

        let encoded_config = encode_config(&config).unwrap();
        assert_eq!(encoded_config, encode_config(&config.clone()).unwrap());
        assert_eq!(encoded_config.digest, image_id(&encoded_config.bytes));
        // oci-spec reads Volumes through a HashMap: compare them as sets.
        let sorted_volumes = |mut c: ImageConfiguration| {
            let mut inner = c.config().clone().unwrap();
            let mut v = inner.volumes().clone().unwrap();
            v.sort();
            inner.set_volumes(Some(v));
            c.set_config(Some(inner));
            c
        };
        assert_eq!(
            sorted_volumes(parse_config(&encoded_config.bytes).unwrap()),
            sorted_volumes(config.clone())
        );
        let text = String::from_utf8(encoded_config.bytes.clone()).unwrap();
        assert!(
            text.contains(r#""Volumes":{"/a":{},"/b":{},"/c":{}}"#),
            "{text}"
        );
        assert!(!text.contains(' ') && !text.contains('\n'));

        let manifest = new_manifest(encoded_config.descriptor().unwrap(), layers).unwrap();
        let encoded = encode_manifest(&manifest).unwrap();
        assert_eq!(encoded, encode_manifest(&manifest).unwrap());
        assert_eq!(encoded.digest, Digest::sha256_of(&encoded.bytes));
        assert_eq!(detect(None, &encoded.bytes).unwrap(), Format::OciManifest);
        let back = manifest_of(parse(Some(OCI_MANIFEST), &encoded.bytes).unwrap());
        assert_eq!(back, manifest);
        check_image_manifest(&back).unwrap();
        check_layer_count(&parse_config(&encoded_config.bytes).unwrap(), &back).unwrap_err();
        let text = String::from_utf8(encoded.bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"config":{"digest":"sha256:"#),
            "{text}"
        );

        let mut md = encoded.descriptor().unwrap();
        md.set_platform(Some(plat("linux/arm64/v8")));
        let index = new_index(vec![md]);
        let encoded_index = encode_index(&index).unwrap();
        assert_eq!(encoded_index.media_type, MediaType::ImageIndex);
        let back = index_of(parse(None, &encoded_index.bytes).unwrap());
        assert_eq!(back, index);
        assert_eq!(
            select_platform(&back, &plat("linux/arm64")),
            Some(&back.manifests()[0])
        );
    }

    #[test]
    fn config_extras_survive_a_rewrite() {
        let docker = docker_config();
        let config = parse_config(docker.as_bytes()).unwrap();
        let mut extras = config_extras(docker.as_bytes()).unwrap();
        extras.insert(
            "WorkingDir".to_string(),
            Value::String("/ignored".to_string()),
        );
        let encoded = encode_config_with_extras(&config, &extras).unwrap();
        let again = config_extras(&encoded.bytes).unwrap();
        extras.remove("WorkingDir");
        assert_eq!(again, extras);
        assert_eq!(again["Shell"], serde_json::json!(["/bin/ash", "-c"]));
        let reread = parse_config(&encoded.bytes).unwrap();
        assert_eq!(
            reread.config().as_ref().unwrap().working_dir().as_deref(),
            Some("/srv")
        );
        assert_eq!(reread.rootfs(), config.rootfs());
        // A config without a `config` object gets one for the extras.
        let mut bare = config.clone();
        bare.set_config(None);
        let encoded = encode_config_with_extras(&bare, &extras).unwrap();
        assert_eq!(config_extras(&encoded.bytes).unwrap(), extras);
    }
}
