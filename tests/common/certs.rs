//! Test certificates made with the `openssl` CLI: a CA of the test's own, a broker certificate for
//! `localhost` (only: `127.0.0.1` is the wrong host name) signed by it, a client certificate signed by it, and a second,
//! unrelated CA for the "wrong CA" cases. [`Certs::mistakes`] adds the usual mistakes: X.509 v1
//! certificates (plain `openssl x509 -req`, no extension file) and certificates out of their dates
//! (`openssl ca` with explicit start and end dates).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI is installed (.ci/run installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_leaf(dir: &Path, ca: &str, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    sign(dir, ca, name, name, true);
}

/// Signs `{name}.csr` with the CA `ca` into `{out}.pem` the plain way (`openssl x509 -req`), with
/// the extensions of `{name}.ext` — or without them, which makes an X.509 v1 certificate.
fn sign(dir: &Path, ca: &str, name: &str, out: &str, extensions: bool) {
    let (csr, ca_cert, ca_key, out) = (
        format!("{name}.csr"),
        format!("{ca}.pem"),
        format!("{ca}.key"),
        format!("{out}.pem"),
    );
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_cert,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &out,
    ];
    let ext = format!("{name}.ext");
    if extensions {
        args.extend(["-extfile", &ext]);
    }
    openssl(dir, &args);
}

/// Certificates with the usual mistakes, for the keys of [`Certs`]' client and broker certificates.
pub struct Mistakes {
    /// The client's key, in a certificate made by plain `openssl x509 -req`: X.509 v1.
    pub v1_client_cert: PathBuf,
    /// The client's key, in a certificate valid in January 2020 only.
    pub expired_client_cert: PathBuf,
    /// The client's key, in a certificate valid from 2099 on.
    pub future_client_cert: PathBuf,
    /// The broker's key (`server_key`), in an X.509 v1 certificate for localhost.
    pub v1_server_cert: PathBuf,
    /// The broker's key, in a certificate for localhost valid in January 2020 only.
    pub expired_server_cert: PathBuf,
}

/// Signs `{name}.csr` with the CA for exactly `start`..`end` (`YYYYMMDDHHMMSSZ`), with the
/// extensions of `{name}.ext`: `openssl x509` cannot set dates, `openssl ca` can.
fn sign_dated(dir: &Path, name: &str, out: &str, start: &str, end: &str) {
    let db = dir.join(format!("{out}.db"));
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("index.txt"), "").unwrap();
    std::fs::write(db.join("serial"), "1000\n").unwrap();
    let config = format!(
        "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n[any]\ncommonName = supplied\n",
        db = db.display()
    );
    std::fs::write(dir.join(format!("{out}.cnf")), config).unwrap();
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &format!("{out}.cnf"),
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{out}.pem"),
            "-extfile",
            &format!("{name}.ext"),
            "-startdate",
            start,
            "-enddate",
            end,
        ],
    );
}

impl Certs {
    /// Makes the mistaken certificates beside the good ones.
    pub fn mistakes(&self) -> Mistakes {
        let dir = &self.dir;
        sign(dir, "ca", "client", "client-v1", false);
        sign_dated(
            dir,
            "client",
            "client-expired",
            "20200101000000Z",
            "20200201000000Z",
        );
        sign_dated(
            dir,
            "client",
            "client-future",
            "20990101000000Z",
            "20990201000000Z",
        );
        sign(dir, "ca", "server", "server-v1", false);
        sign_dated(
            dir,
            "server",
            "server-expired",
            "20200101000000Z",
            "20200201000000Z",
        );
        Mistakes {
            v1_client_cert: dir.join("client-v1.pem"),
            expired_client_cert: dir.join("client-expired.pem"),
            future_client_cert: dir.join("client-future.pem"),
            v1_server_cert: dir.join("server-v1.pem"),
            expired_server_cert: dir.join("server-expired.pem"),
        }
    }

    /// Makes everything in `dir` (which must exist).
    pub fn make(dir: &Path) -> Certs {
        make_ca(dir, "ca", "/CN=job-closer test CA/O=job-closer tests");
        make_ca(dir, "other-ca", "/CN=some other CA");
        make_leaf(
            dir,
            "ca",
            "server",
            "/CN=localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
        );
        make_leaf(
            dir,
            "ca",
            "client",
            "/CN=job-closer-test-client/O=job-closer tests",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        );
        make_leaf(
            dir,
            "other-ca",
            "other-client",
            "/CN=stranger",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        );
        Certs {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_client_cert: dir.join("other-client.pem"),
            other_client_key: dir.join("other-client.key"),
        }
    }
}
