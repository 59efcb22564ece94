//! A rustls server configuration from PEM files (ring provider, TLS 1.2 and 1.3, optional or
//! required client certificates), shared by the node's registry port and the sidecar's admin
//! API.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Load `cert` (chain, leaf first) and `key`; with `client_ca`, verify client certificates
/// against it (`required`: no certificate, no connection) and, with `crl`, refuse those the
/// revocation lists (PEM or DER, one or more) name. `alpn`: protocols to offer.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    crl: Option<&Path>,
    required: bool,
    alpn: &[&[u8]],
) -> Result<ServerConfig, String> {
    let named = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| named(cert, &e))?;
    if certs.is_empty() {
        return Err(named(cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| named(ca, &e))? {
                roots.add(c.map_err(|e| named(ca, &e))?).map_err(|e| named(ca, &e))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crl) = crl {
                v = v.with_crls(load_crls(crl)?);
            }
            let v = if required { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build().map_err(|e| named(ca, &e))?)
        }
    };
    if crl.is_some() && client_ca.is_none() {
        return Err("a client certificate revocation list needs client_ca".into());
    }
    let mut sc = builder.with_single_cert(certs, key).map_err(|e| named(cert, &e))?;
    sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(sc)
}

/// Revocation lists from a PEM file (one or more `X509 CRL` blocks) or a DER file.
fn load_crls(path: &Path) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, String> {
    use rustls_pki_types::CertificateRevocationListDer as Crl;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(b"-----") {
        let crls: Vec<Crl<'static>> =
            Crl::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|e| format!("{}: {e}", path.display()))?;
        if crls.is_empty() {
            return Err(format!("{}: no X509 CRL in the file", path.display()));
        }
        Ok(crls)
    } else {
        Ok(vec![Crl::from(bytes)])
    }
}
