//! `rkube image`: builds OCI image tarballs from directories (and the busybox and pause
//! images every node needs) and imports them into containerd. See `rkube_kubelet::image`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rkube_kubelet::image;

/// Flags of `rkube image`.
#[derive(Args, Debug)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Build an OCI image-layout tarball from a root filesystem directory (one layer,
    /// reproducible: same input, same digests).
    Build(BuildArgs),
    /// Build `localhost/busybox:1` from the host's static busybox (package busybox-static).
    Busybox(BuiltinArgs),
    /// Build the sandbox image `localhost/pause:1`: a static busybox shell that sleeps as
    /// PID 1, reaps children and exits on SIGTERM.
    Pause(BuiltinArgs),
    /// Import image tarballs into containerd (runs `ctr images import` in the `k8s.io`
    /// namespace: CRI has no import call).
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// Fully qualified image name with tag, e.g. localhost/myapp:1.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The directory that becomes the image's root filesystem.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Where to write the tarball.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// Default command (repeat for each argument: --cmd /bin/sh --cmd -c --cmd 'echo hi').
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Entry point (repeat for each argument).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Environment variable K=V (repeat for several).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// Working directory of the container.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
}

#[derive(Args, Debug)]
struct BuiltinArgs {
    /// Where to write the tarball.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// Image name (default localhost/busybox:1 or localhost/pause:1).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The static busybox binary to use.
    #[arg(long, default_value = image::HOST_BUSYBOX, value_name = "PATH")]
    busybox: PathBuf,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// containerd's socket.
    #[arg(
        long,
        default_value = "/run/containerd/containerd.sock",
        value_name = "SOCKET"
    )]
    address: PathBuf,
    /// Image tarballs.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs `rkube image ...`.
pub(crate) async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Build(a) => {
            for e in &a.env {
                anyhow::ensure!(e.contains('='), "--env {e:?} is not K=V");
            }
            let spec = image::ImageSpec {
                name: a.name.clone(),
                from: a.from,
                cmd: a.cmd,
                entrypoint: a.entrypoint,
                env: a.env,
                workdir: a.workdir,
            };
            let built = image::build(&spec, &a.out)?;
            println!("{} {} {}", a.name, built.config_digest, a.out.display());
        }
        ImageCommand::Busybox(a) => {
            let name = a.name.unwrap_or_else(|| image::BUSYBOX_IMAGE.into());
            let built = image::build_busybox(&name, &a.busybox, &a.out).with_context(|| {
                format!("is busybox-static installed ({})?", a.busybox.display())
            })?;
            println!("{name} {} {}", built.config_digest, a.out.display());
        }
        ImageCommand::Pause(a) => {
            let name = a.name.unwrap_or_else(|| image::PAUSE_IMAGE.into());
            let built = image::build_pause(&name, &a.busybox, &a.out).with_context(|| {
                format!("is busybox-static installed ({})?", a.busybox.display())
            })?;
            println!("{name} {} {}", built.config_digest, a.out.display());
        }
        ImageCommand::Import(a) => {
            for f in &a.files {
                image::import(&a.address, f).await?;
                println!("imported {}", f.display());
            }
        }
    }
    Ok(())
}
