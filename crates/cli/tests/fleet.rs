//! A fleet: 20 real masters with distinct host ids poll one store (a
//! directory, and an S3 bucket served by `s3s-fs`) for the manifest
//! `overseer publish` writes. Each wave moves exactly the hosts whose
//! bucket is inside its share; a halt keeps `advance` from opening the
//! next wave; `advance --max-rollbacks 0` opens it when every host of the
//! wave kept the release and halts the rollout when one rolled it back
//! (the reports are written to the store by the hosts); a yank moves every
//! host back to the previous good version. And hosts reading the
//! directory through a plain web server (Python's `http.server`, which
//! answers `If-Modified-Since`) follow what is published there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use overseer::fleet::bucket;
use overseer_harness::proc::Proc;

#[path = "../../overseer/tests/support/s3s.rs"]
mod s3s;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
const HOSTS: usize = 20;
/// Long enough for a wave, under load.
const T: Duration = Duration::from_secs(60);

/// Where the fleet's store is, and how every command reaches it.
struct Store {
    /// DEST for publish and rollout, and --fetch-fleet.
    dest: String,
    /// Extra arguments of publish and rollout.
    publish_args: Vec<String>,
    /// Extra arguments of `overseer run`.
    run_args: Vec<String>,
    /// Environment of every command.
    env: Vec<(String, String)>,
    /// The S3 server, kept running for the test.
    _server: Option<s3s::Server>,
}

impl Store {
    /// A directory store.
    fn directory(path: &Path) -> Store {
        Store {
            dest: path.display().to_string(),
            publish_args: Vec::new(),
            run_args: Vec::new(),
            env: Vec::new(),
            _server: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(OVERSEER);
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Puts `bytes` at `name` in the store, behind the publisher's back (a
    /// damaged or swapped object).
    fn put(&self, name: &str, bytes: &[u8]) {
        use overseer::fetcher::Store as _;
        self.library().write(name, bytes).expect("put");
    }

    /// The object at `name`.
    fn get(&self, name: &str) -> Vec<u8> {
        use overseer::fetcher::{Object, Store as _};
        match self.library().read(name, 1 << 30, None).expect("read") {
            Object::Found { bytes, .. } => bytes,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// The same store, through the library.
    fn library(&self) -> Box<dyn overseer::fetcher::Store> {
        match &self._server {
            Some(server) => {
                let prefix = self
                    .dest
                    .strip_prefix(&format!("s3://{}/", s3s::BUCKET))
                    .expect("an s3:// store");
                Box::new(
                    overseer::fetcher::S3::new(s3s::BUCKET, prefix)
                        .endpoint(server.url())
                        .region("us-east-1")
                        .credentials(s3s::ACCESS_KEY, s3s::SECRET_KEY),
                )
            }
            None => Box::new(overseer::fetcher::Directory::new(&self.dest)),
        }
    }

    /// `overseer SUBCOMMAND ARGS… [store args] DEST`, which must succeed.
    fn run(&self, args: &[&str]) -> String {
        let out: Output = self
            .command(args)
            .args(&self.publish_args)
            .arg(&self.dest)
            .output()
            .expect("overseer runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("$ overseer {}\n{text}", args.join(" "));
        text
    }
}

/// Makes the publisher's keys in `dir` (`release.key`, `release.pub`);
/// the secret key's path.
fn keygen(dir: &Path) -> String {
    let out = Command::new(OVERSEER)
        .args(["keygen", "--name", "release", "--out"])
        .arg(dir)
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
    dir.join("release.key").display().to_string()
}

/// A worker of `version`: `--version` prints it; with `CRASH_VERSION` set
/// to it, it exits at once (a build that fails on some hosts); otherwise it
/// runs until told to stop. 256 KiB of comments the same in every version
/// follow, so that builds differ as little as real ones do.
fn build(dir: &Path, version: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("build-{version}/app"));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("build dir");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# fleet test worker {version}\n\
             if [ \"$1\" = --version ]; then n=0; while [ -e \"$CHECK_HOLD\" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; echo {version}; exit 0; fi\n\
             if [ \"$CRASH_VERSION\" = {version} ]; then exit 3; fi\n\
             exec sleep 600\n{}",
            padding()
        ),
    )
    .expect("write build");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// 256 KiB of comment lines, the same at every call.
fn padding() -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = String::new();
    while text.len() < 256 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("# {x:016x} {:016x}\n", x.rotate_left(29)));
    }
    text
}

struct Host {
    id: String,
    control: PathBuf,
    proc: Proc,
}

impl Host {
    fn status(&self) -> Option<overseer::control::Status> {
        overseer::control::status(&self.control, Duration::from_secs(5)).ok()
    }

    fn version(&self) -> Option<String> {
        self.status().and_then(|s| s.version)
    }
}

/// Starts host `i`, running version 1.0.0 of `build` from its own
/// directory, with `env` and `args` besides the usual.
fn start_host(
    dir: &Path,
    store: &Store,
    i: usize,
    env: &[(&str, &str)],
    args: &[&str],
    v1: &Path,
) -> Host {
    let id = format!("host-{i:02}");
    let home = dir.join(&id);
    std::fs::create_dir_all(&home).expect("host dir");
    let app = home.join("app");
    std::fs::copy(v1, &app).expect("install 1.0.0");
    let control = home.join("control.sock");
    let mut cmd = store.command(&["run", "--listen", "127.0.0.1:0", "--control"]);
    cmd.arg(&control)
        .args(["--app-version", "1.0.0", "--fetch-interval", "200ms"])
        .args(["--probation", "1s", "--terminate-timeout", "2s"])
        .args(["--fetch-fleet", &store.dest, "--fleet-reports"])
        .args(["--host-id", &id, "--public-key"])
        .arg(dir.join("release.pub"))
        .args(&store.run_args)
        .args(args)
        .arg("--")
        .arg(&app)
        .envs(env.iter().copied());
    let proc = Proc::spawn_quiet(cmd);
    Host { id, control, proc }
}

/// Waits until every host runs the version `want` says, or panics with
/// what each runs.
fn wait_versions(hosts: &[Host], want: impl Fn(&Host) -> &'static str, what: &str) {
    let deadline = Instant::now() + T;
    loop {
        let now: Vec<Option<String>> = hosts.iter().map(Host::version).collect();
        if hosts
            .iter()
            .zip(&now)
            .all(|(h, v)| v.as_deref() == Some(want(h)))
        {
            return;
        }
        if Instant::now() > deadline {
            let table: Vec<String> = hosts
                .iter()
                .zip(&now)
                .map(|(h, v)| format!("{}: {v:?}, want {}", h.id, want(h)))
                .collect();
            for h in hosts {
                eprintln!("--- {}\n{}", h.id, h.proc.output().join("\n"));
            }
            panic!("{what}: not reached in {T:?}:\n{}", table.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hosts hold `want` for a few more poll intervals: nobody else moves.
fn hold_versions(hosts: &[Host], want: impl Fn(&Host) -> &'static str + Copy, what: &str) {
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        for h in hosts {
            // A status not answered in time (a loaded machine) is asked again.
            let version = (0..3).find_map(|_| h.version());
            assert_eq!(version.as_deref(), Some(want(h)), "{what}: {}", h.id);
        }
    }
}

/// `rollout advance --max-rollbacks 0`, asked again while hosts of the
/// wave have not reported yet (a report follows a probation's end).
fn advance_once_reported(store: &Store, key: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let said = store.run(&["rollout", "advance", "--max-rollbacks", "0", "--key", key]);
        if !said.contains("not reported yet") || Instant::now() > deadline {
            return said;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fleet(store: Store, dir: &Path) {
    let key = keygen(dir);
    let key = key.as_str();
    let v1 = build(dir, "1.0.0");
    let v2 = build(dir, "2.0.0");
    let v3 = build(dir, "3.0.0");
    let b = |id: &str, v: &str| bucket(id, "stable", v);

    // 3.0.0 fails on the host of its first wave with the lowest bucket.
    let ids: Vec<String> = (0..HOSTS).map(|i| format!("host-{i:02}")).collect();
    let crasher = ids
        .iter()
        .min_by(|x, y| b(x, "3.0.0").total_cmp(&b(y, "3.0.0")))
        .cloned()
        .expect("hosts");
    let hosts: Vec<Host> = (0..HOSTS)
        .map(|i| {
            let crash: &[(&str, &str)] = if ids[i] == crasher {
                &[("CRASH_VERSION", "3.0.0")]
            } else {
                &[]
            };
            start_host(dir, &store, i, crash, &[], &v1)
        })
        .collect();
    wait_versions(&hosts, |_| "1.0.0", "the fleet starting");

    // 2.0.0 in three waves, the later ones opened by `advance` only.
    let v2_arg = v2.to_str().expect("utf-8 path");
    store.run(&[
        "publish",
        "--key",
        key,
        "--version",
        "2.0.0",
        "--waves",
        "25%,50%@30d,100%@60d",
        "--expires",
        "90d",
        v2_arg,
    ]);
    let in_wave = |share: f64| {
        move |h: &Host| {
            if b(&h.id, "2.0.0") < share {
                "2.0.0"
            } else {
                "1.0.0"
            }
        }
    };
    let first = hosts.iter().filter(|h| b(&h.id, "2.0.0") < 0.25).count();
    assert!(
        first > 0 && first < HOSTS,
        "{first} hosts in the first wave"
    );
    wait_versions(&hosts, in_wave(0.25), "wave 1 of 2.0.0");
    hold_versions(&hosts, in_wave(0.25), "wave 1 of 2.0.0, held");
    // A host outside the wave says why it waits.
    let outside = hosts
        .iter()
        .find(|h| b(&h.id, "2.0.0") >= 0.25)
        .expect("a host outside");
    let rollout = outside.status().and_then(|s| s.rollout).unwrap_or_default();
    assert!(
        rollout.contains("2.0.0 waits") && rollout.contains("wave 1 of 3"),
        "{rollout}"
    );

    // Halted, `advance` opens nothing.
    store.run(&["rollout", "halt", "--key", key]);
    let said = store.run(&["rollout", "advance", "--max-rollbacks", "0", "--key", key]);
    assert!(said.contains("halted"), "{said}");
    hold_versions(&hosts, in_wave(0.25), "2.0.0 halted");
    store.run(&["rollout", "resume", "--key", key]);

    // Every host of wave 1 kept it: wave 2 opens, then wave 3. Every host
    // is known (it said what it serves at its first manifest), so each
    // wave waits for all of its hosts' reports.
    let said = advance_once_reported(&store, key);
    assert!(said.contains("wave 2 opened"), "{said}");
    wait_versions(&hosts, in_wave(0.5), "wave 2 of 2.0.0");
    hold_versions(&hosts, in_wave(0.5), "wave 2 of 2.0.0, held");
    let said = advance_once_reported(&store, key);
    assert!(said.contains("wave 3 opened"), "{said}");
    wait_versions(&hosts, |_| "2.0.0", "wave 3 of 2.0.0");
    let status = store.run(&["rollout", "status"]);
    assert!(
        status.contains(&format!(
            "{HOSTS} expected, {HOSTS} upgraded, 0 rolled back, 0 silent"
        )),
        "{status}"
    );
    // Each host said once what it served when its master started.
    for h in &hosts {
        assert_eq!(
            h.proc.count("fleet: reported 1.0.0"),
            1,
            "{}: {:?}",
            h.id,
            h.proc.output()
        );
    }

    // 3.0.0 fails on one host of its first wave: `advance` halts it.
    let v3_arg = v3.to_str().expect("utf-8 path");
    store.run(&[
        "publish",
        "--key",
        key,
        "--version",
        "3.0.0",
        "--waves",
        "25%,50%@30d,100%@60d",
        v3_arg,
    ]);
    let v3_wave = |h: &Host| {
        if b(&h.id, "3.0.0") < 0.25 && h.id != crasher {
            "3.0.0"
        } else {
            "2.0.0"
        }
    };
    wait_versions(&hosts, v3_wave, "wave 1 of 3.0.0");
    let said = advance_once_reported(&store, key);
    assert!(
        said.contains("halted") && said.contains("1 rolled back"),
        "{said}"
    );
    assert!(said.contains(&format!("{crasher} rolled back")), "{said}");
    let status = store.run(&["rollout", "status"]);
    assert!(status.contains("halted since"), "{status}");
    hold_versions(&hosts, v3_wave, "3.0.0 halted");

    // Withdrawn: every host on 3.0.0 goes back to 2.0.0.
    store.run(&["rollout", "yank", "--version", "3.0.0", "--key", key]);
    wait_versions(&hosts, |_| "2.0.0", "3.0.0 withdrawn");
    for h in &hosts {
        let pid = h.proc.pid;
        assert!(
            overseer_harness::proc::alive(pid),
            "{} (pid {pid}) is gone",
            h.id
        );
    }
}

#[test]
fn a_fleet_of_masters_polling_a_directory_rolls_out_by_wave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::directory(&dir.path().join("fleet"));
    fleet(store, dir.path());
}

#[test]
fn a_fleet_of_masters_polling_an_s3_bucket_rolls_out_by_wave() {
    let Some(server) = s3s::start_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    fleet(s3_store(server), dir.path());
}

/// The store under `fleet/stable` in the bucket `server` serves.
fn s3_store(server: s3s::Server) -> Store {
    let endpoint = server.url();
    Store {
        dest: format!("s3://{}/fleet/stable", s3s::BUCKET),
        publish_args: vec![
            "--endpoint".into(),
            endpoint.clone(),
            "--region".into(),
            "us-east-1".into(),
        ],
        run_args: vec![
            "--s3-endpoint".into(),
            endpoint,
            "--s3-region".into(),
            "us-east-1".into(),
        ],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), s3s::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), s3s::SECRET_KEY.into()),
        ],
        _server: Some(server),
    }
}

/// Python's static web server over `dir` on a free loopback port; killed
/// (by pid) on drop.
struct WebServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn web_server(dir: &Path) -> WebServer {
    for _attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut server = WebServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = server.child.kill();
    }
    panic!("python3 -m http.server would not start");
}

#[test]
fn hosts_reading_the_fleet_through_a_web_server_follow_publish_and_yank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let fleet_dir = d.join("fleet");
    std::fs::create_dir_all(&fleet_dir).expect("fleet dir");
    let server = web_server(&fleet_dir);
    let key = keygen(d);
    let key = key.as_str();
    let publisher = Store::directory(&fleet_dir);
    let reader = Store {
        dest: format!("http://127.0.0.1:{}/", server.port),
        ..Store::directory(&fleet_dir)
    };
    let v1 = build(d, "1.0.0");
    let hosts: Vec<Host> = (0..3)
        .map(|i| start_host(d, &reader, i, &[], &[], &v1))
        .collect();
    wait_versions(&hosts, |_| "1.0.0", "the hosts starting");
    for (version, want) in [("2.0.0", "2.0.0"), ("3.0.0", "3.0.0")] {
        // The server's dates have one-second granularity: a manifest
        // replaced within the second a host read the last one could be
        // answered "not modified".
        std::thread::sleep(Duration::from_millis(1_100));
        let binary = build(d, version);
        publisher.run(&[
            "publish",
            "--key",
            key,
            "--version",
            version,
            binary.to_str().expect("utf-8 path"),
        ]);
        wait_versions(&hosts, |_| want, version);
    }
    std::thread::sleep(Duration::from_millis(1_100));
    publisher.run(&["rollout", "yank", "--version", "3.0.0", "--key", key]);
    wait_versions(&hosts, |_| "2.0.0", "3.0.0 withdrawn");
    // Reports cannot be written to a web server: said, nothing else lost.
    let said = hosts[0].proc.output().join("\n");
    assert!(said.contains("read-only"), "{said}");
}

/// A release withdrawn while a host downloads and checks it is dropped
/// before it replaces anything (here the check lasts until the yank is
/// done).
#[test]
fn a_release_withdrawn_while_it_is_checked_is_not_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let key = keygen(d);
    let key = key.as_str();
    let store = Store::directory(&d.join("fleet"));
    let v1 = build(d, "1.0.0");
    // While `hold` exists, a build's `--version` (the sanity check) waits.
    let hold = d.join("hold");
    let host = start_host(
        d,
        &store,
        0,
        &[("CHECK_HOLD", hold.to_str().expect("utf-8 path"))],
        &["--sanity-check", "version", "--sanity-timeout", "60s"],
        &v1,
    );
    wait_versions(
        std::slice::from_ref(&host),
        |_| "1.0.0",
        "the host starting",
    );
    let v2 = build(d, "2.0.0");
    std::fs::write(&hold, "").expect("hold the check");
    store.run(&[
        "publish",
        "--key",
        key,
        "--version",
        "2.0.0",
        v2.to_str().expect("utf-8 path"),
    ]);
    host.proc.expect_line("taking 2.0.0", T);
    store.run(&["rollout", "yank", "--version", "2.0.0", "--key", key]);
    std::fs::remove_file(&hold).expect("end the check");
    host.proc
        .expect_line("2.0.0 was withdrawn meanwhile; not installed", T);
    hold_versions(std::slice::from_ref(&host), |_| "1.0.0", "2.0.0 withdrawn");
    let app = d.join("host-00/app");
    assert_eq!(
        std::fs::read(&app).expect("the binary"),
        std::fs::read(&v1).expect("1.0.0")
    );
    assert_eq!(host.proc.count("installed version 2.0.0"), 0);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// Deltas: a host running a build a patch was made from downloads the
/// patch, another host the whole binary; a damaged patch, a truncated one
/// and one swapped for another base's each fall back to the whole binary,
/// said once, and the release is installed all the same.
fn deltas(store: Store, dir: &Path) {
    let key = keygen(dir);
    let key = key.as_str();
    let target = "x86_64-unknown-linux-gnu";
    let builds: Vec<PathBuf> = ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"]
        .iter()
        .map(|v| build(dir, v))
        .collect();
    let other = build(dir, "1.0.1");
    let hosts = vec![
        start_host(dir, &store, 0, &[], &[], &builds[0]),
        start_host(dir, &store, 1, &[], &[], &other),
    ];
    wait_versions(&hosts, |_| "1.0.0", "the hosts starting");
    // Published for later (`--waves 100%@1h`) when the test damages the
    // patch before `rollout advance` opens it to the hosts.
    let publish = |version: &str, from: &[&Path], to: &Path, later: bool| {
        let waves: &[&str] = if later { &["--waves", "100%@1h"] } else { &[] };
        let from: Vec<&str> = from
            .iter()
            .flat_map(|f| ["--delta-from", f.to_str().expect("utf-8 path")])
            .collect();
        let said = store.run(
            &[
                &[
                    "publish",
                    "--key",
                    key,
                    "--version",
                    version,
                    "--target",
                    target,
                ][..],
                &from,
                waves,
                &[to.to_str().expect("utf-8 path")],
            ]
            .concat(),
        );
        assert!(said.contains("patch from"), "{said}");
    };
    let patch_of = |version: &str, from: &Path| {
        let base = sha256_hex(&std::fs::read(from).expect("base"));
        format!("{version}/{target}/patches/{base}.bidiff.zst")
    };

    // 2.0.0: host 0 runs the base of its patch, host 1 another build.
    publish("2.0.0", &[&builds[0]], &builds[1], false);
    wait_versions(&hosts, |_| "2.0.0", "2.0.0");
    let delta_lines = |h: &Host, v: &str| {
        h.proc
            .output()
            .iter()
            .filter(|l| l.contains(&format!("taking {v}")) && l.contains("as a delta"))
            .count()
    };
    assert!(
        hosts[0]
            .proc
            .output()
            .iter()
            .any(|l| l.contains("installed version 2.0.0 as a delta")),
        "{:?}",
        hosts[0].proc.output()
    );
    assert_eq!(
        delta_lines(&hosts[0], "2.0.0"),
        1,
        "{:?}",
        hosts[0].proc.output()
    );
    assert_eq!(
        delta_lines(&hosts[1], "2.0.0"),
        0,
        "{:?}",
        hosts[1].proc.output()
    );

    // Damaged, truncated, swapped: the whole binary instead, said once.
    let damage = |version: &str, mut p: Vec<u8>| {
        match version {
            "3.0.0" => {
                let mid = p.len() / 2;
                p[mid] ^= 0x55;
            }
            _ => p.truncate(p.len() / 3),
        }
        p
    };
    // 5.0.0: another base's patch in its place.
    for (i, version) in ["3.0.0", "4.0.0", "5.0.0"].into_iter().enumerate() {
        let (from, to) = (&builds[i + 1], &builds[i + 2]);
        let name = patch_of(version, from);
        let damaged = if version == "5.0.0" {
            // The patch from 1.0.0 (another shape: four versions apart) in
            // the place of the one from 4.0.0.
            publish(version, &[from, &builds[0]], to, true);
            store.get(&patch_of(version, &builds[0]))
        } else {
            publish(version, &[from], to, true);
            damage(version, store.get(&name))
        };
        store.put(&name, &damaged);
        let said = store.run(&["rollout", "advance", "--max-rollbacks", "0", "--key", key]);
        assert!(said.contains("wave 1 opened"), "{said}");
        wait_versions(&hosts, |_| version, version);
        let said = hosts[0]
            .proc
            .output()
            .iter()
            .filter(|l| l.contains(&format!("the delta to {version}")))
            .cloned()
            .collect::<Vec<_>>();
        assert!(
            said.len() == 1
                && said[0].contains("failed")
                && said[0].contains("downloading the whole artifact"),
            "{version}: {said:?}"
        );
        assert_eq!(delta_lines(&hosts[0], version), 0);
    }
    for h in &hosts {
        let app = dir.join(format!("{}/app", h.id));
        assert_eq!(
            std::fs::read(&app).expect("the binary"),
            std::fs::read(&builds[4]).expect("5.0.0"),
            "{}",
            h.id
        );
    }
}

#[test]
fn deltas_from_a_directory_and_their_fallbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    deltas(Store::directory(&dir.path().join("fleet")), dir.path());
}

#[test]
fn deltas_from_an_s3_bucket_and_their_fallbacks() {
    let Some(server) = s3s::start_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    deltas(s3_store(server), dir.path());
}
