//! The per-VM proxy CA that LocalSandboxd hands out, like sandboxd's `proxy_cacerts/proxy-ca.crt`.
//!
//! LocalSandboxd runs no MITM proxy, so the private key is never written anywhere: the certificate exists so
//! that SDK users can exercise their CA-trust set-up against a real, parseable PEM.

use crate::core::error::{Error, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A fresh self-signed CA certificate, PEM encoded.
pub fn generate_ca_pem(vm_name: &str) -> Result<String> {
    let fail = |e: rcgen::Error| Error::internal(format!("generating the proxy CA failed: {e}"));
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        DnType::CommonName,
        format!("LocalSandboxd proxy CA ({vm_name})"),
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
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_shape() {
        let pem = super::generate_ca_pem("t-vm").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pem.trim_end().ends_with("-----END CERTIFICATE-----"));
        assert_ne!(pem, super::generate_ca_pem("t-vm").unwrap());
    }
}
