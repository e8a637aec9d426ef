//! The one TLS client configuration (rustls with the ring provider and the webpki root set),
//! built once and shared by every wss and https connection: building a root store per
//! connection costs milliseconds of CPU and a few hundred KB each time.

use std::sync::{Arc, LazyLock};

use tokio_rustls::rustls;

static CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ClientConfig::builder())
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
});

pub fn client_config() -> Arc<rustls::ClientConfig> {
    CONFIG.clone()
}
