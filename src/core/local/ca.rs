//! The per-sandbox proxy CA, like sandboxd's `proxy_cacerts/proxy-ca.crt`: a self-signed CA whose private key lives
//! only in memory ([`ProxyCa`]), used by the proxy to mint the leaf certificates of intercepted HTTPS
//! ([`crate::core::local::proxy`]). Only the certificate is ever written to a file; the key is in no file, no
//! error and no `Debug` output. rcgen builds and signs the certificates; rustls holds the minted leaves.

use crate::core::error::{Error, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Leaf certificates kept per CA (the oldest minted is dropped first).
pub const LEAF_CACHE: usize = 1024;

/// How long a minted leaf is valid (it is minted again when the cache drops it).
const LEAF_DAYS: i64 = 30;

struct Leaves {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    order: VecDeque<String>,
}

/// A CA with its key in memory that mints leaf certificates for host names and IP addresses.
pub struct ProxyCa {
    name: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf of this CA (minting a certificate is then one signature).
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn SigningKey>,
    leaves: Mutex<Leaves>,
}

impl fmt::Debug for ProxyCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("ProxyCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn fail(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::internal(format!("{what} failed: {e}"))
}

impl ProxyCa {
    /// A fresh CA named after `name` (a VM or sandbox), valid 2024–2044, ECDSA P-256.
    pub fn generate(name: &str) -> Result<ProxyCa> {
        let f = fail("generating the proxy CA");
        let key = KeyPair::generate().map_err(&f)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(&f)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("LocalSandboxd proxy CA ({name})"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "sandboxd LocalSandboxd");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2044, 1, 1);
        let cert = params.self_signed(&key).map_err(&f)?;
        let leaf_key = KeyPair::generate().map_err(&f)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signer = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| Error::internal(format!("loading the proxy leaf key failed: {e}")))?;
        Ok(ProxyCa {
            name: name.to_string(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            leaf_key,
            leaf_signer,
            leaves: Mutex::new(Leaves {
                by_host: HashMap::new(),
                order: VecDeque::new(),
            }),
        })
    }

    /// The CA certificate, PEM encoded (what a sandbox trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The leaf certificate (chain: leaf, CA) and key for `host`, a DNS name or an IP address (no brackets),
    /// minted on first use and cached ([`LEAF_CACHE`] hosts).
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        if let Some(k) = self.lock().by_host.get(&host) {
            return Ok(k.clone());
        }
        let f = fail("minting a proxy leaf certificate");
        let mut params = CertificateParams::new(vec![host.clone()]).map_err(&f)?;
        params.distinguished_name.push(DnType::CommonName, &host);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = params.signed_by(&self.leaf_key, &self.issuer).map_err(&f)?;
        let key = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            self.leaf_signer.clone(),
        ));
        let mut leaves = self.lock();
        if !leaves.by_host.contains_key(&host) {
            if leaves.order.len() >= LEAF_CACHE {
                if let Some(old) = leaves.order.pop_front() {
                    leaves.by_host.remove(&old);
                }
            }
            leaves.order.push_back(host.clone());
        }
        leaves.by_host.insert(host, key.clone());
        Ok(key)
    }

    /// How many leaves are cached.
    pub fn cached_leaves(&self) -> usize {
        self.lock().by_host.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leaves> {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fresh self-signed CA certificate, PEM encoded (its key is dropped).
pub fn generate_ca_pem(vm_name: &str) -> Result<String> {
    Ok(ProxyCa::generate(vm_name)?.cert_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_shape() {
        let pem = generate_ca_pem("t-vm").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pem.trim_end().ends_with("-----END CERTIFICATE-----"));
        assert_ne!(pem, generate_ca_pem("t-vm").unwrap());
    }

    #[test]
    fn leaves_are_cached_bounded_and_keyless_in_debug() {
        let ca = ProxyCa::generate("t").unwrap();
        let a = ca.leaf("Example.TEST").unwrap();
        assert!(Arc::ptr_eq(&a, &ca.leaf("example.test").unwrap()));
        assert_eq!(a.cert.len(), 2);
        assert_eq!(&a.cert[1], ca.cert_der());
        ca.leaf("198.18.0.1").unwrap();
        ca.leaf("::1").unwrap();
        assert_eq!(ca.cached_leaves(), 3);
        for i in 0..LEAF_CACHE {
            ca.leaf(&format!("h{i}.test")).unwrap();
        }
        assert_eq!(ca.cached_leaves(), LEAF_CACHE);
        let dbg = format!("{ca:?}");
        assert_eq!(dbg, "ProxyCa { name: \"t\", .. }");
    }
}
