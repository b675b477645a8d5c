//! The HTTPS listener: TLS (rustls, client certificates optional), HTTP/1.1 and HTTP/2, one
//! task per connection, each request handed to [`ApiServer::handle`] with the identity of
//! the connection's client certificate.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rkube_store::Store;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::allocator::ServiceRanges;
use crate::authn::Authenticator;
use crate::handlers::ApiServer;
use crate::pki::{ClusterPki, PkiOptions};
use crate::rest::Rest;

/// What the API server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where certificates live (`<data-dir>/tls`).
    pub tls_dir: PathBuf,
    /// Address and port to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Extra subject alternative names for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Static bearer tokens (`--token-auth-file`).
    pub token_auth_file: Option<PathBuf>,
    /// Where to write the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The Service IP range (`--service-cidr`).
    pub service_cidr: String,
    /// The Service NodePort range (`--service-node-port-range`, `FROM-TO`).
    pub service_node_port_range: String,
    /// How often the store's history is compacted (zero: never).
    pub compaction_interval: std::time::Duration,
}

/// A running API server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The cluster PKI (CA and admin credentials).
    pub pki: ClusterPki,
    /// The REST storage (for in-process components and tests).
    pub rest: Arc<Rest>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The token file.
    #[error(transparent)]
    Tokens(#[from] crate::authn::TokenFileError),
    /// Listening.
    #[error(
        "cannot listen on {addr}: {source} (choose another --https-listen-port or --bind-address)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bad range flag.
    #[error("{0}")]
    Config(String),
    /// The service account signing key.
    #[error(transparent)]
    ServiceAccountKey(#[from] crate::serviceaccount_token::KeyError),
    /// Bootstrapping the storage.
    #[error("cannot initialise the API storage: {0}")]
    Storage(#[from] crate::status::ApiError),
}

/// Creates or loads the PKI, writes the admin kubeconfig, binds, and serves until `shutdown`
/// completes.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let pki = ClusterPki::load_or_create(
        &config.tls_dir,
        &PkiOptions {
            service_cidr: config.service_cidr.clone(),
            extra_sans: config.tls_sans.clone(),
            ..PkiOptions::default()
        },
    )?;
    let tls = Arc::new(crate::tls::server_config_for(&pki)?);
    let mut authn = match &config.token_auth_file {
        Some(path) => Authenticator::with_token_file(path)?,
        None => Authenticator::default(),
    };
    authn.service_account_keys = Some(Arc::new(
        crate::serviceaccount_token::TokenKeys::load_or_create(&config.tls_dir)?,
    ));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let ranges = ServiceRanges::parse(&config.service_cidr, &config.service_node_port_range)
        .map_err(StartError::Config)?;
    crate::compactor::start(store.clone(), config.compaction_interval);
    let rest = Rest::start(store, rkube_api::registry::registry(), ranges).await?;
    rest.ensure_kubernetes_service(local_addr.port()).await?;
    let host = if local_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local_addr.ip().to_string()
    };
    crate::kubeconfig::write_admin_kubeconfig(&config.kubeconfig, &pki, &host, local_addr.port())?;
    tracing::info!(kubeconfig = %config.kubeconfig.display(), "wrote admin kubeconfig");
    let api = Arc::new(ApiServer {
        rest: rest.clone(),
        authn,
        advertise_address: format!("{host}:{}", local_addr.port()),
    });
    tokio::spawn(serve(listener, TlsAcceptor::from(tls), api, shutdown));
    Ok(Running {
        local_addr,
        pki,
        rest,
    })
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    api: Arc<ApiServer>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%remote, %err, "TLS handshake failed");
                    return;
                }
            };
            let peer = crate::tls::user_from_peer_certificates(tls.get_ref().1.peer_certificates());
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(api.handle(req.map(Body::new), peer).await) }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%remote, %err, "connection ended with an error");
            }
        });
    }
}
