//! A real etcd for tests: Debian's `etcd` (package `etcd-server`) started on loopback on
//! free ports, its data in a scratch directory, killed by its PID when dropped.
//!
//! [`EtcdServer::start`] returns `None` (after saying why) only when the binary is absent
//! and the tests do not run as root; as root (CI), `scripts/test.sh` installs it, so its
//! absence is a failure.
// clippy.toml allows unwrap/expect in #[test] fns; these helpers are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tapwire_control::datastore::{Datastore, EtcdStore};
use tapwire_control::model::EtcdConfig;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Certificates for mutual TLS, made by `openssl`: a CA, a server certificate for
/// 127.0.0.1 and a client certificate, all signed by the CA.
#[derive(Debug)]
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// One etcd process.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    pub dir: tempfile::TempDir,
    pub tls: Option<Certificates>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether etcd can be run here; if not, says why on stderr (the caller skips).
pub fn available(test: &str) -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    assert!(
        !is_root(),
        "{ETCD} is missing: install Debian's etcd-server and etcd-client (scripts/test.sh does)"
    );
    eprintln!(
        "SKIPPED {test}: {ETCD} is missing and this is not root (apt-get install etcd-server etcd-client)"
    );
    false
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate (SAN IP 127.0.0.1) and a client certificate in `dir`.
pub fn make_certificates(dir: &Path) -> Certificates {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=tapwire-test-ca",
            days[0],
            days[1],
        ],
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=tapwire-test-{name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
                days[0],
                days[1],
            ],
        );
    }
    Certificates {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    }
}

impl EtcdServer {
    /// A fresh etcd on plain HTTP; `None` when the test is to be skipped.
    pub fn start(test: &str) -> Option<EtcdServer> {
        Self::start_with(test, false)
    }

    /// A fresh etcd that serves only HTTPS and requires client certificates.
    pub fn start_tls(test: &str) -> Option<EtcdServer> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Option<EtcdServer> {
        if !available(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| make_certificates(dir.path()));
        let mut server = EtcdServer {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            tls,
        };
        server.spawn();
        Some(server)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// How a node would be configured to reach it (with the client certificate when TLS).
    pub fn config(&self) -> EtcdConfig {
        let mut config = EtcdConfig::plain([self.endpoint()]);
        if let Some(certs) = &self.tls {
            config.ca_file = Some(certs.ca.clone());
            config.cert_file = Some(certs.client_cert.clone());
            config.key_file = Some(certs.client_key.clone());
        }
        config
    }

    /// A store on it.
    pub fn store(&self) -> EtcdStore {
        EtcdStore::open(&self.config()).unwrap()
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let mut command = Command::new(ETCD);
        command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=error");
        if let Some(certs) = &self.tls {
            command
                .arg(format!("--cert-file={}", certs.server_cert.display()))
                .arg(format!("--key-file={}", certs.server_key.display()))
                .arg(format!("--trusted-ca-file={}", certs.ca.display()))
                .arg("--client-cert-auth");
        }
        let log = fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until etcd answers (a few seconds at most).
    fn wait_ready(&mut self) {
        let store = self.store().with_op_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match store.revision() {
                Ok(_) => return,
                Err(err) if Instant::now() >= deadline => {
                    let log =
                        fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                    panic!("etcd did not start: {err}\n{log}");
                }
                Err(_) => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        let log = fs::read_to_string(self.dir.path().join("etcd.log"))
                            .unwrap_or_default();
                        panic!("etcd exited with {status}\n{log}");
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Kills etcd (by its PID) and waits for it; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `etcdctl` against it (ETCDCTL_API=3); its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut command = Command::new(ETCDCTL);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args);
        if let Some(certs) = &self.tls {
            command
                .arg(format!("--cacert={}", certs.ca.display()))
                .arg(format!("--cert={}", certs.client_cert.display()))
                .arg(format!("--key={}", certs.client_key.display()));
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
