//! Test helpers for driving CNI plugins the way a container runtime does, and for
//! running tapwire's programs against a stand-in agent.
//!
//! - [`run_bounded`]: one run of a program with piped standard streams, bounded in time.
//! - [`exec_plugin`]: one plugin invocation — `CNI_*` variables plus the configuration on
//!   stdin, a clean environment, bounded in time — returning exit code, stdout and stderr.
//! - [`Runtime`]: libcni's semantics for a network configuration list ("conflist"): each
//!   plugin is found by its `type` in `CNI_PATH`, receives `cniVersion` and `name` from
//!   the list, `runtimeConfig` built from its `capabilities` (which are removed), and a
//!   `prevResult`: on ADD the previous plugin's result (none for the first), on CHECK and
//!   DEL the final result of the ADD. DEL runs the plugins in reverse order. The first
//!   failure stops the chain and is returned.
//! - [`FakeAgent`]: a `tapwire-control` stand-in on a Unix socket that answers with a
//!   closure and records every request, with a scratch directory for input files.
//!
//! To drive a conflist through tapwire and a stock plugin (e.g. Debian's
//! `/usr/lib/cni/tuning`), build a [`Runtime`] whose `cni_path` holds the directory of
//! `env!("CARGO_BIN_EXE_tapwire")` and `/usr/lib/cni`, then call [`Runtime::add`], keep the
//! result, and hand it to [`Runtime::check`] and [`Runtime::del`].
// clippy.toml allows unwrap/expect in #[test] fns; these helpers are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

/// The BGP documents the CLI and datastore tests use: the cluster's BGPConfiguration, a
/// router peer of one node, a global peer and the route reflectors' peering.
pub const BGP_DOCUMENTS: &str = "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 63400, logSeverityScreen: Debug}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec: {node: node-a, peerIP: 192.168.0.254, asNumber: 64513}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: core}
spec: {peerIP: 10.0.0.1, asNumber: 65000}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: \"route-reflector == 'true'\"}
";

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tapwire_control::api::{self, Request, Response};

/// How long one plugin invocation may take before the test kills it.
pub const PLUGIN_DEADLINE: Duration = Duration::from_secs(20);

/// The tapwire plugin under test.
pub fn tapwire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapwire"))
}

/// The per-attachment parameters a runtime passes as `CNI_*` variables.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

/// What one run of a program printed.
#[derive(Debug, Clone)]
pub struct ProgramRun {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What one plugin run printed.
pub type PluginRun = ProgramRun;

impl ProgramRun {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout as JSON in any layout (stock plugins pretty-print their results).
    pub fn any_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Stdout as one line of JSON (tapwire's layout), asserting nothing else was printed.
    pub fn json(&self) -> Value {
        assert!(
            self.stdout.ends_with('\n') && self.stdout.trim_end().lines().count() == 1,
            "stdout is not one line of JSON: {:?} (stderr {:?})",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `cmd` with its standard streams piped: `stdin` is fed from a thread (a program
/// may answer before reading all of it), stdout and stderr are read to their ends. The
/// run is killed, and the test fails naming `what`, after `limit`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], limit: Duration, what: &str) -> ProgramRun {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out_reader = read_to_end(child.stdout.take().unwrap());
    let err_reader = read_to_end(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    ProgramRun {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

/// Reads `pipe` to its end on a thread.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `bin` with exactly the variables in `env` (nothing inherited) and `stdin`,
/// killing it after [`PLUGIN_DEADLINE`].
pub fn exec_plugin(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> PluginRun {
    let mut cmd = Command::new(bin);
    cmd.env_clear().envs(env.iter().copied());
    let run = run_bounded(&mut cmd, stdin, PLUGIN_DEADLINE, &bin.display().to_string());
    assert!(
        !run.stderr.contains("panicked"),
        "{} panicked: {}",
        bin.display(),
        run.stderr
    );
    run
}

/// A CNI runtime in miniature (libcni's conflist semantics; see the module doc).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Directories searched for plugin executables (and passed as `CNI_PATH`).
    pub cni_path: Vec<PathBuf>,
    /// Capability arguments the runtime offers (`mac`, `portMappings`…).
    pub capability_args: Map<String, Value>,
}

/// A failed plugin in a chain.
#[derive(Debug, Clone)]
pub struct ChainError {
    pub plugin: String,
    pub run: PluginRun,
}

impl Runtime {
    pub fn new(cni_path: Vec<PathBuf>) -> Runtime {
        Runtime {
            cni_path,
            capability_args: Map::new(),
        }
    }

    fn find(&self, plugin_type: &str) -> PathBuf {
        self.cni_path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("plugin {plugin_type} not in {:?}", self.cni_path))
    }

    /// The execution configuration of one plugin of `list`.
    pub fn plugin_config(
        list: &Value,
        plugin: &Value,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) -> Value {
        let mut conf = plugin
            .as_object()
            .cloned()
            .expect("plugin entry is an object");
        conf.insert("cniVersion".into(), list["cniVersion"].clone());
        conf.insert("name".into(), list["name"].clone());
        if let Some(Value::Object(wanted)) = conf.remove("capabilities") {
            let runtime_config: Map<String, Value> = wanted
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), caps.get(k)?.clone())))
                .collect();
            if !runtime_config.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
            }
        }
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }

    fn exec(
        &self,
        command: &str,
        list: &Value,
        plugin: &Value,
        prev: Option<&Value>,
        att: &Attachment,
    ) -> Result<PluginRun, ChainError> {
        let plugin_type = plugin["type"]
            .as_str()
            .expect("plugin has a type")
            .to_string();
        let conf = Self::plugin_config(list, plugin, prev, &self.capability_args);
        let cni_path = std::env::join_paths(&self.cni_path).unwrap();
        let cni_path = cni_path.to_string_lossy().into_owned();
        let mut env = vec![("CNI_COMMAND", command), ("CNI_PATH", cni_path.as_str())];
        for (name, value) in [
            ("CNI_CONTAINERID", &att.container_id),
            ("CNI_NETNS", &att.netns),
            ("CNI_IFNAME", &att.ifname),
            ("CNI_ARGS", &att.args),
        ] {
            if !value.is_empty() {
                env.push((name, value.as_str()));
            }
        }
        let run = exec_plugin(&self.find(&plugin_type), &env, conf.to_string().as_bytes());
        if run.success() {
            Ok(run)
        } else {
            Err(ChainError {
                plugin: plugin_type,
                run,
            })
        }
    }

    fn plugins(list: &Value) -> Vec<Value> {
        list["plugins"]
            .as_array()
            .cloned()
            .expect("conflist has plugins")
    }

    /// ADD through the chain; the final result (what a runtime caches).
    pub fn add(&self, list: &Value, att: &Attachment) -> Result<Value, ChainError> {
        let mut prev: Option<Value> = None;
        for plugin in Self::plugins(list) {
            let run = self.exec("ADD", list, &plugin, prev.as_ref(), att)?;
            prev = Some(run.any_json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK through the chain with the cached ADD result (skipped if `disableCheck`).
    pub fn check(&self, list: &Value, att: &Attachment, cached: &Value) -> Result<(), ChainError> {
        if list["disableCheck"].as_bool() == Some(true) {
            return Ok(());
        }
        for plugin in Self::plugins(list) {
            self.exec("CHECK", list, &plugin, Some(cached), att)?;
        }
        Ok(())
    }

    /// DEL through the chain in reverse order, with the cached ADD result if any.
    pub fn del(
        &self,
        list: &Value,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), ChainError> {
        for plugin in Self::plugins(list).iter().rev() {
            self.exec("DEL", list, plugin, cached, att)?;
        }
        Ok(())
    }
}

type Responder = dyn Fn(&Request) -> Response + Send + Sync;

/// A `tapwire-control` stand-in: answers each API request with `respond` and records it.
pub struct FakeAgent {
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    pub fn start(respond: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeAgent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Responder> = Arc::new(respond);
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let response = match api::read_request(&mut stream) {
                        Ok(request) => {
                            let response = respond(&request);
                            requests.lock().unwrap().push(request);
                            response
                        }
                        Err(err) => Response::Error(err),
                    };
                    let _ = api::write_response(&mut stream, &response);
                }
            })
        };
        FakeAgent {
            dir,
            socket,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests served so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// The agent's scratch directory (it also holds the socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to file `name` in the scratch directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
