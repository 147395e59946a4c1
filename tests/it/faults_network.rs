//! A network cut between a worker and the engine: one `procos worker` in a network namespace of
//! the test's own, reaching the engine over a veth pair, another outside it on loopback; the link
//! cut for 30 s while 2,000 instances run, with locks shorter than the cut, then restored. Every
//! instance ends, every external task completes exactly once, and both workers live on, the one
//! cut off serving again after the restore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use camunda_client::ExternalTaskLogQuery;

use crate::support::tally::{
    Tally, assert_alive_and_stop, wait_for_all_ended, wait_for_completions,
};
use crate::support::{self, ProcosProcess};

const INSTANCES: usize = 2000;
/// Completions before the cut: the run is well under way, most of it still ahead.
const CUT_AFTER: u64 = 400;
const CUT: Duration = Duration::from_secs(30);
/// Instance starts in flight at once: quick, without queueing hundreds of calls in the engine.
const STARTING_AT_ONCE: usize = 32;

/// A network namespace with a veth pair to the host, removed (with the pair) when dropped, so
/// that a failed test leaves nothing behind. Names and addresses come from the test binary's
/// pid, so that two test binaries on one machine do not meet.
struct NetworkNamespace {
    name: String,
    host_veth: String,
    /// The host end's address: the engine, as the namespace reaches it.
    host_address: String,
}

impl NetworkNamespace {
    fn create() -> Self {
        let pid = std::process::id();
        // A /30 of 10.231.0.0/16 per pid (modulo the 16,384 there are).
        let block = pid % 16_384;
        let (third, base) = (block / 64, (block % 64) * 4);
        // Interface names have at most 15 characters; a pid has at most 7 digits.
        let inside_veth = format!("pcut{pid}n");
        let inside_address = format!("10.231.{third}.{}/30", base + 2);
        let namespace = Self {
            name: format!("procos-cut-{pid}"),
            host_veth: format!("pcut{pid}h"),
            host_address: format!("10.231.{third}.{}", base + 1),
        };
        // What a killed earlier test binary with the same pid may have left.
        namespace.remove();
        ip(&["netns", "add", &namespace.name]);
        ip(&[
            "link",
            "add",
            &namespace.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &inside_veth,
        ]);
        ip(&["link", "set", &inside_veth, "netns", &namespace.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", namespace.host_address),
            "dev",
            &namespace.host_veth,
        ]);
        namespace.set_link("up");
        let inside = ["-n", namespace.name.as_str()];
        ip(&[
            &inside[..],
            &["addr", "add", &inside_address, "dev", &inside_veth],
        ]
        .concat());
        ip(&[&inside[..], &["link", "set", &inside_veth, "up"]].concat());
        ip(&[&inside[..], &["link", "set", "lo", "up"]].concat());
        namespace
    }

    /// The command prefix that runs a program inside the namespace.
    fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Brings the host end of the pair `up` or `down`: a cut in the middle of the cable, as
    /// the namespace's worker sees it (no reset, no error; packets simply go nowhere).
    fn set_link(&self, state: &str) {
        ip(&["link", "set", &self.host_veth, state]);
    }

    /// Whether `GET /engine-rest/engine` on the host end, from inside the namespace, answers 200:
    /// the engine listens on all addresses, not on loopback alone.
    fn engine_answers_inside(&self, port: u16) -> Result<(), String> {
        let request = format!(
            "exec 3<>/dev/tcp/{}/{port} && printf 'GET /engine-rest/engine HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3",
            self.host_address
        );
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "10", "bash", "-c"])
            .arg(&request)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        let status_line = String::from_utf8_lossy(&output.stdout);
        if status_line.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "{}: {status_line} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn remove(&self) {
        // Deleting one end deletes the pair, wherever the other end is; a namespace that a
        // process still holds would otherwise keep it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `ip ARGS…`, failing the test with its message.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "the network-cut test builds its network with `ip`, which cannot be run ({e}): \
             install iproute2 (scripts/test.sh does)"
        )
    });
    assert!(
        output.status.success(),
        "`ip {}` failed ({}; the test needs root): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A worker of `max_tasks` slots serving `topic` with echo, each run taking a second: two
/// workers take about a minute for the run, so that much of it is left when the link comes
/// back, and the worker outside cannot finish it alone during the cut. Locks last 10 s, a third
/// of the cut.
fn config(topic: &str) -> String {
    format!(
        "[worker]\nlong_poll = \"5s\"\nmax_tasks = 16\n\n[topics.\"{topic}\"]\nadapter = \"echo\"\n\
         lock_duration = \"10s\"\nsettings = {{ delay = \"1s\" }}\n"
    )
}

// In the fault phase, alone: its waits are sized for a machine that runs nothing else, and its
// 2,000 instances would slow every test beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault phase: scripts/test.sh runs the faults_ tests alone, one at a time"]
async fn a_worker_cut_off_for_30_s_loses_no_task_and_serves_again() {
    let began = Instant::now();
    let namespace = NetworkNamespace::create();
    let port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let (client, engine) = support::boot_engine(port, data.path(), vec![]).await;
    let booted = began.elapsed();
    if let Err(why) = namespace.engine_answers_inside(port) {
        panic!(
            "the engine does not answer on {}:{port} from inside the namespace: {why}",
            namespace.host_address
        );
    }
    let (key, topic) = support::deploy_process(&client, "netcut").await;

    let inside_id = format!("{key}-inside");
    let outside_id = format!("{key}-outside");
    let inside = ProcosProcess::spawn_wrapped(
        &namespace.exec(),
        &["worker"],
        &format!("http://{}:{port}/engine-rest", namespace.host_address),
        &inside_id,
        &config(&topic),
        &[],
    );
    let mut outside = ProcosProcess::spawn(client.base_url(), &outside_id, &config(&topic));

    let starting = {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let ids = support::start_many(&client, &key, INSTANCES, STARTING_AT_ONCE, |_| {
                Default::default()
            })
            .await;
            (ids, began.elapsed())
        })
    };
    let completed_query = ExternalTaskLogQuery {
        process_definition_key: Some(key.clone()),
        success_log: Some(true),
        ..Default::default()
    };
    wait_for_completions(&client, &key, CUT_AFTER, Duration::from_secs(90)).await;
    let before_cut = client.external_task_log(&completed_query).await.unwrap();
    let by = |log: &[camunda_client::ExternalTaskLogEntry], id: &str| {
        log.iter()
            .filter(|e| e.worker_id.as_deref() == Some(id))
            .count()
    };
    assert!(
        by(&before_cut, &inside_id) > 0 && by(&before_cut, &outside_id) > 0,
        "both workers completed tasks before the cut, the one inside through the veth: \
         inside {}, outside {}",
        by(&before_cut, &inside_id),
        by(&before_cut, &outside_id)
    );

    namespace.set_link("down");
    eprintln!(
        "network cut: the link is down after {} completions, {:.0} s after the engine booted \
         (in {:.0} s)",
        before_cut.len(),
        (began.elapsed() - booted).as_secs_f64(),
        booted.as_secs_f64()
    );
    tokio::time::sleep(CUT).await;
    namespace.set_link("up");
    let restored = Instant::now();
    let restored_at = chrono::DateTime::<chrono::Utc>::from(SystemTime::now());
    let (instances, start_phase) = starting.await.unwrap();
    assert_eq!(instances.len(), INSTANCES);

    wait_for_all_ended(&client, &key, INSTANCES, Duration::from_secs(120)).await;
    let time_to_recover = restored.elapsed();
    // Anything still in flight (a result sent before the cut, delivered late) would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let logs = [inside.log(), outside.log()];
    let tally = Tally::count(
        "network cut 30 s",
        &client,
        &key,
        &instances,
        &logs,
        time_to_recover,
    )
    .await;
    let log = client.external_task_log(&completed_query).await.unwrap();
    let inside_after: Vec<_> = log
        .iter()
        .filter(|e| {
            e.worker_id.as_deref() == Some(inside_id.as_str())
                && e.timestamp.timestamp_millis() > restored_at.timestamp_millis()
        })
        .collect();
    let first_after = inside_after
        .iter()
        .map(|e| e.timestamp.timestamp_millis() - restored_at.timestamp_millis())
        .min();
    eprintln!(
        "network cut: faults 1 (the link down {} s); completions by the worker inside {} ({} \
         after the restore, the first {} ms after it), outside {}; {INSTANCES} instances started in {:.0} s; the whole test so far {:.0} s",
        CUT.as_secs(),
        by(&log, &inside_id),
        inside_after.len(),
        first_after.map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
        by(&log, &outside_id),
        start_phase.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    tally.assert_nothing_lost(1);
    assert!(
        inside_after.len() > 16,
        "the worker inside serves again once the link is back (more completions than its slots): \
         {} after the restore",
        inside_after.len()
    );

    assert!(
        outside.child.try_wait().unwrap().is_none(),
        "the worker outside is alive"
    );
    for worker in [inside, outside] {
        assert_alive_and_stop(worker, Duration::from_secs(30)).await;
    }
    engine.stop(Duration::from_secs(20)).await;
    drop(namespace);
    eprintln!(
        "network cut: the test took {:.0} s",
        began.elapsed().as_secs_f64()
    );
}
