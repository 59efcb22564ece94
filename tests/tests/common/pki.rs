//! Certificates for TLS tests: a CA, server and client certificates, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA the test makes, with a server certificate for 127.0.0.1/localhost (`srv.pem`,
/// `srv.key`) and a client certificate for `ci` (`cli.pem`, `cli.key`, clientAuth).
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ossl(&self, args: &[&str]) {
        let out = Command::new("openssl").current_dir(&self.dir).args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA, a server certificate for 127.0.0.1/localhost, and a client certificate for `ci`.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let p = Pki { dir: dir.to_path_buf() };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        p.ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Berth test CA"],
            ]
            .concat(),
        );
        std::fs::write(dir.join("srv.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        std::fs::write(dir.join("cli.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        p.server_cert("srv", "registry one");
        p.ossl(&[&["req"][..], &ec, &["-keyout", "cli.key", "-out", "cli.csr", "-subj", "/CN=ci/O=robots"]].concat());
        p.ossl(&[
            "x509",
            "-req",
            "-in",
            "cli.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cli.pem",
            "-days",
            "2",
            "-extfile",
            "cli.ext",
        ]);
        p
    }

    pub fn server_cert(&self, name: &str, org: &str) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        self.ossl(
            &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN=localhost/O={org}")]].concat(),
        );
        self.ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "srv.ext",
        ]);
    }

    /// A client certificate `<name>.pem`/`<name>.key` for common name `cn`.
    pub fn client_cert(&self, name: &str, cn: &str) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        self.ossl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
        self.ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "cli.ext",
        ]);
    }

    /// Write `crl.pem`: the CA's revocation list, after revoking each of `revoke` (PEM files).
    pub fn crl(&self, revoke: &[&str]) -> String {
        if !self.dir.join("ca.cnf").exists() {
            std::fs::write(self.dir.join("index.txt"), "").unwrap();
            std::fs::write(self.dir.join("crlnumber"), "01\n").unwrap();
            std::fs::write(
                self.dir.join("ca.cnf"),
                "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n",
            )
            .unwrap();
        }
        for r in revoke {
            self.ossl(&["ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-revoke", r]);
        }
        self.ossl(&["ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-gencrl", "-out", "crl.pem"]);
        self.path("crl.pem")
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// A directory with `ca.crt`, as skopeo and podman take it.
    pub fn cert_dir(&self) -> String {
        let d = self.dir.join("certs");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.dir.join("ca.pem"), d.join("ca.crt")).unwrap();
        d.display().to_string()
    }
}
