//! Images without a registry: builds OCI image-layout tarballs from a directory and imports
//! them into containerd.
//!
//! [`build`] packs a root filesystem directory into one deterministic layer (sorted entries,
//! owner 0:0, mtime 0, gzip without a timestamp), writes the image config, the manifest and an
//! `index.json` whose `io.containerd.image.name` annotation names the image, and bundles it all
//! with the `oci-layout` file into one tar. The same input gives the same bytes, so the same
//! digests. [`stage_busybox`] and [`stage_pause`] prepare the root filesystems of the two
//! images every node needs (`localhost/busybox:1` and the sandbox image `localhost/pause:1`)
//! from the host's static busybox.
//!
//! CRI has no import call, so [`import`] runs containerd's own client, `ctr images import`,
//! from the containerd package against the runtime's socket (the `containerd-client` crate
//! would add a second gRPC API surface for this one call).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzipped layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation containerd reads the image name from on import.
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The busybox image every node gets.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:1";
/// The sandbox ("pause") image.
pub const PAUSE_IMAGE: &str = "localhost/pause:1";
/// Where Debian's busybox-static installs the binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Errors of image building and import.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image name is not fully qualified.
    #[error(
        "image name {0:?} must be fully qualified with a tag, like localhost/NAME:TAG (short names mean docker.io)"
    )]
    InvalidName(String),
    /// Reading the root filesystem or writing the tarball failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file type that images cannot hold (socket, device, fifo).
    #[error("cannot put {0} in an image: only files, directories and symlinks are supported")]
    Unsupported(PathBuf),
    /// `ctr images import` failed.
    #[error("ctr images import {file} failed: {message}")]
    Import {
        /// The tarball.
        file: PathBuf,
        /// ctr's output.
        message: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Fully qualified name with tag, e.g. `localhost/busybox:1`.
    pub name: String,
    /// The root filesystem.
    pub from: PathBuf,
    /// Default arguments (`config.Cmd`).
    pub cmd: Vec<String>,
    /// Entry point (`config.Entrypoint`).
    pub entrypoint: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
}

/// Digests and sizes of what [`build`] wrote.
#[derive(Debug, Clone)]
pub struct Built {
    /// `sha256:...` of the manifest (what `index.json` points at).
    pub manifest_digest: String,
    /// `sha256:...` of the config: the image ID runtimes report.
    pub config_digest: String,
    /// `sha256:...` of the uncompressed layer (`rootfs.diff_ids`).
    pub diff_id: String,
}

/// Checks that `name` is `host/path:tag`.
pub fn validate_name(name: &str) -> Result<()> {
    let (repo, tag) = name
        .rsplit_once(':')
        .ok_or_else(|| Error::InvalidName(name.into()))?;
    let (host, path) = repo
        .split_once('/')
        .ok_or_else(|| Error::InvalidName(name.into()))?;
    let host_ok = host == "localhost" || host.contains('.') || host.contains(':');
    if !host_ok || path.is_empty() || tag.is_empty() || tag.contains('/') {
        return Err(Error::InvalidName(name.into()));
    }
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Appends `path` (relative name `name`) and, for directories, its contents in sorted order.
fn append_tree<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(io("read", &path))?;
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    use std::os::unix::fs::PermissionsExt;
    header.set_mode(meta.permissions().mode() & 0o7777);
    let ft = meta.file_type();
    if !rel.as_os_str().is_empty() {
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, rel, std::io::empty())
                .map_err(io("write", &path))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io("read link", &path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, rel, &target)
                .map_err(io("write", &path))?;
        } else if ft.is_file() {
            let file = std::fs::File::open(&path).map_err(io("open", &path))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            tar.append_data(&mut header, rel, file)
                .map_err(io("write", &path))?;
        } else {
            return Err(Error::Unsupported(path));
        }
    }
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .map_err(io("list", &path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io("list", &path))?;
        names.sort();
        for name in names {
            append_tree(tar, root, &rel.join(name))?;
        }
    }
    Ok(())
}

/// A tar entry with fixed metadata.
fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .map_err(io("write", Path::new(name)))
}

/// Builds the image described by `spec` and writes the OCI image-layout tarball to `out`.
pub fn build(spec: &ImageSpec, out: &Path) -> Result<Built> {
    validate_name(&spec.name)?;
    let meta = std::fs::metadata(&spec.from).map_err(io("read", &spec.from))?;
    if !meta.is_dir() {
        return Err(Error::Io {
            action: "use as root filesystem",
            path: spec.from.clone(),
            source: std::io::Error::other("not a directory"),
        });
    }
    // The layer.
    let mut layer = tar::Builder::new(Vec::new());
    layer.mode(tar::HeaderMode::Deterministic);
    append_tree(&mut layer, &spec.from, Path::new(""))?;
    let layer = layer.into_inner().map_err(io("write", out))?;
    let diff_id = sha256(&layer);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    gz.write_all(&layer).map_err(io("compress", out))?;
    let layer_gz = gz.finish().map_err(io("compress", out))?;
    let layer_digest = sha256(&layer_gz);

    // The config.
    let mut config = serde_json::Map::new();
    if !spec.env.is_empty() {
        config.insert("Env".into(), json!(spec.env));
    } else {
        config.insert(
            "Env".into(),
            json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        );
    }
    if !spec.cmd.is_empty() {
        config.insert("Cmd".into(), json!(spec.cmd));
    }
    if !spec.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if let Some(w) = &spec.workdir {
        config.insert("WorkingDir".into(), json!(w));
    }
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": go_arch(),
        "os": "linux",
        "config": Value::Object(config),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "rkube image build"}],
    });
    let config = serde_json::to_vec(&config).expect("json");
    let config_digest = sha256(&config);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_gz.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let manifest_digest = sha256(&manifest);
    let tag = spec.name.rsplit_once(':').map_or("", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": go_arch(), "os": "linux"},
            "annotations": {
                NAME_ANNOTATION: spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index).expect("json");

    let blobs: BTreeMap<&str, &[u8]> = [
        (hex_of(&config_digest), &config[..]),
        (hex_of(&layer_digest), &layer_gz[..]),
        (hex_of(&manifest_digest), &manifest[..]),
    ]
    .into_iter()
    .collect();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let tmp = out.with_extension("tar.partial");
    let file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut outer = tar::Builder::new(std::io::BufWriter::new(file));
    append_bytes(
        &mut outer,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append_bytes(&mut outer, "index.json", &index)?;
    for (hex, data) in blobs {
        append_bytes(&mut outer, &format!("blobs/sha256/{hex}"), data)?;
    }
    let mut w = outer.into_inner().map_err(io("write", &tmp))?;
    w.flush().map_err(io("write", &tmp))?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(io("rename", out))?;
    Ok(Built {
        manifest_digest,
        config_digest,
        diff_id,
    })
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The Go name of this machine's architecture (what OCI configs use).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The applets linked in the busybox image (besides `busybox` itself).
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "false", "grep", "hostname", "httpd", "id", "ip", "kill",
    "ls", "mkdir", "nc", "ping", "ps", "rm", "sed", "sleep", "tail", "test", "timeout", "touch",
    "true", "uname", "wc", "wget", "date", "head", "printf", "pwd", "mount", "nslookup",
];

/// Fills `dir` with a busybox root filesystem: `/bin/busybox` copied from `busybox`, applet
/// symlinks, `/etc/passwd`, `/etc/group`, `/tmp`.
pub fn stage_busybox(dir: &Path, busybox: &Path) -> Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(io("create", &bin))?;
    let target = bin.join("busybox");
    std::fs::copy(busybox, &target).map_err(io("copy", busybox))?;
    for applet in APPLETS {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("link", &link))?;
        }
    }
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(io("create", &etc))?;
    let files: [(&str, &str); 3] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ];
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(io("write", &p))?;
    }
    for d in ["tmp", "root", "proc", "sys", "dev"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(io("chmod", &tmp))?;
    Ok(())
}

/// The pause image's command: a shell as PID 1 that sleeps, reaps whatever it waits for and
/// exits 0 on SIGTERM/SIGINT (upstream's pause is a tiny C program doing the same).
pub fn pause_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
    ]
}

/// The busybox image's spec (rootfs already staged in `dir`).
pub fn busybox_spec(name: &str, dir: &Path) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        from: dir.to_path_buf(),
        cmd: vec!["/bin/sh".into()],
        ..ImageSpec::default()
    }
}

/// The pause image's spec (a busybox rootfs already staged in `dir`).
pub fn pause_spec(name: &str, dir: &Path) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        from: dir.to_path_buf(),
        entrypoint: pause_command(),
        ..ImageSpec::default()
    }
}

/// Builds the busybox image (`name`, usually [`BUSYBOX_IMAGE`]) from the host's static
/// busybox into `out`.
pub fn build_busybox(name: &str, busybox: &Path, out: &Path) -> Result<Built> {
    let dir = stage_dir(out)?;
    let result = stage_busybox(&dir, busybox).and_then(|()| build(&busybox_spec(name, &dir), out));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Builds the pause image (`name`, usually [`PAUSE_IMAGE`]) into `out`.
pub fn build_pause(name: &str, busybox: &Path, out: &Path) -> Result<Built> {
    let dir = stage_dir(out)?;
    let result = stage_busybox(&dir, busybox).and_then(|()| build(&pause_spec(name, &dir), out));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn stage_dir(out: &Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let dir = parent.join(format!(
        ".rkube-image-stage-{}-{}",
        std::process::id(),
        out.file_name().map_or("x".into(), |n| n.to_string_lossy())
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    Ok(dir)
}

/// Imports the tarball `file` into containerd at `address` (a socket path) in the CRI
/// namespace `k8s.io`, through `ctr`.
pub async fn import(address: &Path, file: &Path) -> Result<()> {
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| Error::Io {
            action: "run ctr (from the containerd package) to import",
            path: file.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Import {
            file: file.to_path_buf(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Imports every `*.tar` in `dir` (sorted by name); a missing dir imports nothing. Returns
/// the files imported.
pub async fn import_dir(address: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "list",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    files.sort();
    for f in &files {
        import(address, f).await?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    fn read_tar(path: &Path) -> HashMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        let mut out = HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
        out
    }

    fn sample_rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", dir.path().join("bin/hi")).unwrap();
        std::fs::write(dir.path().join("README"), b"x").unwrap();
        dir
    }

    fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
        let data = &files[&format!("blobs/sha256/{}", hex_of(digest))];
        assert_eq!(sha256(data), digest, "blob name matches its content");
        data
    }

    #[test]
    fn layout_digests_match_content() {
        let root = sample_rootfs();
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("img.tar");
        let spec = ImageSpec {
            name: "localhost/hello:1".into(),
            from: root.path().into(),
            cmd: vec!["/bin/hello".into()],
            env: vec!["A=B".into()],
            workdir: Some("/bin".into()),
            ..ImageSpec::default()
        };
        let built = build(&spec, &out).unwrap();
        let files = read_tar(&out);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"][NAME_ANNOTATION], "localhost/hello:1");
        assert_eq!(m["digest"], built.manifest_digest);
        let manifest_bytes = blob(&files, &built.manifest_digest);
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], built.config_digest);
        let config: Value = serde_json::from_slice(blob(&files, &built.config_digest)).unwrap();
        assert_eq!(config["config"]["Cmd"], json!(["/bin/hello"]));
        assert_eq!(config["config"]["Env"], json!(["A=B"]));
        assert_eq!(config["config"]["WorkingDir"], "/bin");
        assert_eq!(config["rootfs"]["diff_ids"][0], built.diff_id);
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer_gz = blob(&files, layer_digest);
        assert_eq!(manifest["layers"][0]["size"], layer_gz.len());
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(layer_gz)
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(
            sha256(&layer),
            built.diff_id,
            "diff_id is the uncompressed layer"
        );
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&layer[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().uid().unwrap(), 0);
            if e.header().entry_type() == tar::EntryType::Symlink {
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("hello"));
            }
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names, ["README", "bin", "bin/hello", "bin/hi"]);
    }

    #[test]
    fn builds_are_reproducible() {
        let root = sample_rootfs();
        let out_dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            name: "localhost/hello:1".into(),
            from: root.path().into(),
            ..ImageSpec::default()
        };
        let a = build(&spec, &out_dir.path().join("a.tar")).unwrap();
        let b = build(&spec, &out_dir.path().join("b.tar")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(
            std::fs::read(out_dir.path().join("a.tar")).unwrap(),
            std::fs::read(out_dir.path().join("b.tar")).unwrap()
        );
    }

    #[test]
    fn names_must_be_fully_qualified() {
        assert!(validate_name("localhost/busybox:1").is_ok());
        assert!(validate_name("registry.example:5000/a/b:v1").is_ok());
        for bad in [
            "busybox",
            "busybox:1",
            "localhost/busybox",
            "library/busybox:1",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let root = sample_rootfs();
        let spec = ImageSpec {
            name: "busybox".into(),
            from: root.path().into(),
            ..ImageSpec::default()
        };
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            build(&spec, &out.path().join("x.tar")),
            Err(Error::InvalidName(_))
        ));
    }

    #[test]
    fn missing_rootfs_is_an_error() {
        let out = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            name: "localhost/x:1".into(),
            from: out.path().join("nope"),
            ..ImageSpec::default()
        };
        assert!(build(&spec, &out.path().join("x.tar")).is_err());
    }

    #[test]
    fn busybox_rootfs_has_applets() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("busybox-bin");
        std::fs::write(&fake, b"\x7fELF").unwrap();
        let root = dir.path().join("root");
        stage_busybox(&root, &fake).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(root.join("etc/passwd").exists());
        let out = dir.path().join("pause.tar");
        let built = build(&pause_spec(PAUSE_IMAGE, &root), &out).unwrap();
        let files = read_tar(&out);
        let config: Value = serde_json::from_slice(blob(&files, &built.config_digest)).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(pause_command()));
    }
}
