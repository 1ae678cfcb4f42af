//! `quarry nbd serve`: exports images over NBD (`quarry_nbd`) on TCP or a Unix socket until
//! SIGINT/SIGTERM, then closes them (the exclusive lock is released, nothing is left for the
//! next writer to fence). Each export is named by the spec it was given (`POOL/IMAGE`,
//! `POOL/NS/IMAGE`, `IMAGE@SNAP`), which is the path of an `nbd://HOST:PORT/NAME` URI.

use std::sync::Arc;

use quarry_conf::CommonArgs;
use quarry_rbd::{Image, LockMode, OpenOptions};
use quarry_types::ErrorCode;

use crate::error::CliError;
use crate::session::{self, Tool};

/// `quarry nbd …`.
#[derive(clap::Args, Debug)]
pub struct NbdArgs {
    /// Who we are and where the cluster is.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: NbdCommand,
}

/// The NBD commands.
#[derive(clap::Subcommand, Debug)]
pub enum NbdCommand {
    /// Serve images over NBD until interrupted.
    Serve(ServeArgs),
}

/// `quarry nbd serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// TCP port (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 10809)]
    pub port: u16,
    /// Listen on this Unix socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    /// Export every image read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Take each writable image's exclusive lock at start and keep it (other writers get
    /// EBUSY) instead of taking it on the first write and handing it over when asked.
    #[arg(long)]
    pub exclusive: bool,
    /// Images to export: `[POOL/[NS/]]IMAGE[@SNAP]` (a snapshot is read-only).
    #[arg(value_name = "SPEC", required = true)]
    pub specs: Vec<String>,
}

/// How long closing the images may take at exit (the cluster may be gone).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn usage(message: impl Into<String>, code: ErrorCode) -> CliError {
    CliError::Usage { message: message.into(), status: u8::try_from(code.0).unwrap_or(1).max(1) }
}

/// `[POOL/[NS/]]IMAGE[@SNAP]` → (pool, namespace, image, snapshot).
fn parse_spec(spec: &str) -> Result<(String, String, String, Option<String>), CliError> {
    let (path, snap) = match spec.split_once('@') {
        Some((path, snap)) => (path, Some(snap.to_string())),
        None => (spec, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (pool, namespace, image) = match parts.as_slice() {
        [image] => ("rbd", "", *image),
        [pool, image] => (*pool, "", *image),
        [pool, namespace, image] => (*pool, *namespace, *image),
        _ => {
            return Err(usage(
                format!("quarry nbd: invalid image spec '{spec}'"),
                ErrorCode::EINVAL,
            ))
        }
    };
    if pool.is_empty() || image.is_empty() {
        return Err(usage(format!("quarry nbd: invalid image spec '{spec}'"), ErrorCode::EINVAL));
    }
    Ok((pool.to_string(), namespace.to_string(), image.to_string(), snap))
}

/// Runs `quarry nbd`.
pub async fn run(args: NbdArgs) -> Result<(), CliError> {
    let NbdCommand::Serve(serve) = args.command;
    let rados = session::connect(&args.common, Tool::Rados).await?;
    let mut exports = Vec::new();
    for spec in &serve.specs {
        let (pool, namespace, name, snap) = parse_spec(spec)?;
        let mut io = rados.ioctx(&pool).await.map_err(|e| {
            usage(format!("quarry nbd: error opening pool '{pool}': {}", e.errno()), e.errno())
        })?;
        io.set_namespace(&namespace).map_err(|e| {
            usage(
                format!("quarry nbd: error setting namespace '{namespace}': {}", e.errno()),
                e.errno(),
            )
        })?;
        let read_only = serve.read_only || snap.is_some();
        let options = OpenOptions { snapshot: snap, read_only, ..Default::default() };
        let image = Image::open(&io, &name, options).await.map_err(|e| {
            usage(format!("quarry nbd: error opening image {spec}: {}", e.errno()), e.errno())
        })?;
        if serve.exclusive && !read_only {
            image.lock_acquire(LockMode::Exclusive, true).await.map_err(|e| {
                usage(
                    format!("quarry nbd: error taking the exclusive lock of {spec}: {}", e.errno()),
                    e.errno(),
                )
            })?;
        }
        let description = format!("Quarry image {spec}");
        exports.push(quarry_nbd::Export {
            name: spec.clone(),
            description,
            image: Arc::new(image),
            read_only,
        });
    }
    let server = quarry_nbd::Server::new(exports);
    let names: Vec<&str> = server.exports().iter().map(|e| e.name.as_str()).collect();
    let serving = match &serve.socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let listener =
                tokio::net::UnixListener::bind(path).map_err(|e| CliError::io(path.clone(), e))?;
            println!("nbd: serving {} on unix:{}", names.join(", "), path.display());
            println!("ready");
            tokio::spawn(server.clone().serve_unix(listener))
        }
        None => {
            let listener =
                tokio::net::TcpListener::bind((serve.bind.as_str(), serve.port))
                    .await
                    .map_err(|e| CliError::io(format!("{}:{}", serve.bind, serve.port), e))?;
            let addr = listener.local_addr().map_err(|e| CliError::io("listener", e))?;
            println!("nbd: serving {} on {addr}", names.join(", "));
            println!("ready");
            tokio::spawn(server.clone().serve_tcp(listener))
        }
    };
    wait_for_signal().await;
    serving.abort();
    let _ = serving.await;
    if let Some(path) = &serve.socket {
        let _ = std::fs::remove_file(path);
    }
    // Connections still running hold clones of the images: close what is ours alone.
    let exports: Vec<_> = server.exports().to_vec();
    drop(server);
    // Bounded: with the cluster gone a close (write-back, lock release, unwatch) would wait
    // for it forever; a second signal ends at once.
    let closing = async {
        for export in exports {
            if let Ok(export) = Arc::try_unwrap(export) {
                if let Ok(image) = Arc::try_unwrap(export.image) {
                    if let Err(e) = image.close().await {
                        eprintln!("quarry nbd: closing {}: {e}", export.name);
                    }
                }
            }
        }
        rados.shutdown().await;
    };
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_TIMEOUT, closing) => {}
        _ = wait_for_signal() => eprintln!("quarry nbd: second signal: exiting without closing the images"),
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_pool_namespace_image_and_snapshot() {
        let spec = |s: &str| parse_spec(s).unwrap();
        assert_eq!(spec("disk"), ("rbd".into(), "".into(), "disk".into(), None));
        assert_eq!(
            spec("data/disk@s1"),
            ("data".into(), "".into(), "disk".into(), Some("s1".into()))
        );
        assert_eq!(spec("data/t1/disk"), ("data".into(), "t1".into(), "disk".into(), None));
        assert!(parse_spec("a/b/c/d").is_err());
        assert!(parse_spec("/disk").is_err());
    }
}
