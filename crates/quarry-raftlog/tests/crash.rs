//! Crash test. Goal: after SIGKILL at any moment, every entry whose append callback completed
//! (openraft's `LogFlushed`) is present and intact, every durable vote survives, and nothing
//! present is garbage. Method: a child process (this test binary re-run with
//! `QUARRY_RAFTLOG_CRASH_DIR` set, executing the ignored `crash_child` test) appends entries
//! for many groups from many tasks, truncating and purging now and then, and prints each
//! acknowledged event to stdout. The parent SIGKILLs it at a random moment (sometimes during
//! its own recovery), reopens the log and checks it against everything printed, for several
//! rounds. Payloads derive from (group, index, term), so any mix-up or garbage is caught.
//! SIGKILL keeps the page cache, so `acknowledged_entries_survive_power_loss` runs the same
//! rounds with the child under the power-loss simulator (`quarry_persist::powerloss`): the
//! kill then also loses every unsynced page the simulated kernel did not write back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::{RaftLogReader, Vote};
use quarry_raftlog::{Wal, WalOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{append, data_of, entry, payload, runtime, Tc};

const DIR_VAR: &str = "QUARRY_RAFTLOG_CRASH_DIR";
const ROUND_VAR: &str = "QUARRY_RAFTLOG_CRASH_ROUND";
const GROUPS: u64 = 16;
const ROUNDS: u64 = 10;
const POWER_LOSS_ROUNDS: u64 = 6;
const PAYLOAD_MAX: u64 = 6000;
const LEADER: u64 = 1;

fn options() -> WalOptions {
    WalOptions { segment_bytes: 256 << 10, cache_bytes: 1 << 20 }
}

/// One line the child printed.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The append of entry `index` in `term` was acknowledged (callback completed).
    Ack { index: u64, term: u64 },
    /// A truncation from `from` is about to be requested.
    Truncate { from: u64 },
    /// A purge up to `index` is about to be requested.
    Purge { index: u64 },
    /// A vote of `term` was saved (save_vote returned).
    Vote { term: u64 },
}

fn emit(line: String) {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes()).unwrap();
    stdout.write_all(b"\n").unwrap();
    stdout.flush().unwrap();
}

/// The child's side: runs only when re-executed by the parent.
#[test]
#[ignore = "entry point of the crash test's child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    runtime().block_on(async move {
        let wal = Wal::open(std::path::Path::new(&dir), options()).unwrap();
        emit("READY".to_string());
        let tasks: Vec<_> =
            (0..GROUPS).map(|group| tokio::spawn(child_group(wal.clone(), group, round))).collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

async fn child_group(wal: Arc<Wal>, group: u64, round: u64) {
    // Odd groups write their rounds themselves when they find the writer free (the OSD's
    // queue-depth-1 path), among the even groups' rounds of the writer thread.
    let mut store = match group % 2 {
        0 => wal.log_store::<Tc>(group),
        _ => crate::common::inline_store(&wal, group),
    };
    let mut term = (round + 1) * 1000;
    store.save_vote(&Vote::new(term, LEADER)).await.unwrap();
    emit(format!("VOTE {group} {term}"));
    let state = store.get_log_state().await.unwrap();
    let mut purged = state.last_purged_log_id.map(|id| id.index);
    let mut next = state.last_log_id.map_or(0, |id| id.index + 1);
    let mut rng = StdRng::seed_from_u64(round * 7919 + group);
    for _ in 0..50_000 {
        let first_live = purged.map_or(0, |index| index + 1);
        match rng.gen_range(0..100) {
            0..=2 if next >= first_live + 4 => {
                let from = next - rng.gen_range(1..=3);
                emit(format!("TRUNC {group} {from}"));
                store.truncate(openraft::testing::log_id(term, LEADER, from)).await.unwrap();
                next = from;
                term += 1;
            }
            3..=5 if next >= first_live + 40 => {
                let index = next - 30;
                let found = store.try_get_log_entries(index..index + 1).await.unwrap();
                let upto = found[0].log_id;
                emit(format!("PURGE {group} {index}"));
                store.purge(upto).await.unwrap();
                purged = Some(index);
            }
            _ => {
                let count = rng.gen_range(1..=3);
                let entries = (next..next + count)
                    .map(|index| entry(term, index, payload(group, index, term, PAYLOAD_MAX)))
                    .collect();
                append(&mut store, entries).await;
                for index in next..next + count {
                    emit(format!("ACK {group} {index} {term}"));
                }
                next += count;
            }
        }
    }
}

fn parse(line: &str) -> Option<(u64, Event)> {
    let mut words = line.split(' ');
    let kind = words.next()?;
    if !matches!(kind, "ACK" | "TRUNC" | "PURGE" | "VOTE") {
        return None; // the test harness's own lines
    }
    let numbers: Vec<u64> = words.map(|word| word.parse().unwrap()).collect();
    let event = match kind {
        "ACK" => Event::Ack { index: numbers[1], term: numbers[2] },
        "TRUNC" => Event::Truncate { from: numbers[1] },
        "PURGE" => Event::Purge { index: numbers[1] },
        _ => Event::Vote { term: numbers[1] },
    };
    Some((numbers[0], event))
}

/// Runs one child and kills it; returns the complete lines it printed. With `power_loss`,
/// the child runs under the power-loss simulator (`QUARRY_TEST_POWERLOSS`, see
/// `quarry_persist::powerloss`): the kill then loses everything not fsynced, except pages
/// the simulated kernel wrote back (a power cut), not only the process.
fn run_child(dir: &std::path::Path, round: u64, rng: &mut StdRng, power_loss: bool) -> Vec<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["crash::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .env_remove(quarry_persist::powerloss::ENV_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if power_loss {
        let options = std::env::var("QUARRY_TEST_POWERLOSS_OPTIONS").unwrap_or_default();
        let seed = rng.gen::<u64>();
        command.env(quarry_persist::powerloss::ENV_VAR, format!("{seed},{options}"));
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 || line.last() != Some(&b'\n') {
                break; // end of output, or a line cut by the kill
            }
            let line = String::from_utf8(line).unwrap().trim_end().to_string();
            // The test harness prints "test crash::crash_child ... " before the first line.
            if line.ends_with("READY") {
                let _ = sender.send(());
            }
            lines.push(line);
        }
        lines
    });
    if round % 4 == 3 {
        // Kill early: often during the child's own recovery.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
    } else {
        receiver.recv_timeout(Duration::from_secs(120)).expect("child never became ready");
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..1500)));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Reopens the log and checks it against the history of every round so far.
fn verify(dir: &std::path::Path, history: &HashMap<u64, Vec<Event>>) -> (u64, u64) {
    let wal = Wal::open(dir, options()).unwrap();
    let torn_bytes = wal.stats().torn_bytes;
    let mut checked = 0;
    runtime().block_on(async {
        for group in 0..GROUPS {
            let events = history.get(&group).map_or(&[][..], |events| &events[..]);
            let mut store = wal.log_store::<Tc>(group);
            let state = store.get_log_state().await.unwrap();
            let purged = state.last_purged_log_id.map(|id| id.index);
            let entries = store.try_get_log_entries(..).await.unwrap();
            let mut present = HashMap::new();
            for found in &entries {
                let (index, term) = (found.log_id.index, found.log_id.leader_id.term);
                let expected = payload(group, index, term, PAYLOAD_MAX);
                assert!(data_of(found) == &expected[..], "group {group} entry {index} is garbage");
                present.insert(index, term);
            }
            let max_purge = events
                .iter()
                .filter_map(|event| match event {
                    Event::Purge { index } => Some(*index),
                    _ => None,
                })
                .max();
            assert!(purged <= max_purge, "group {group} purged {purged:?} > requested");
            let max_vote = events
                .iter()
                .filter_map(|event| match event {
                    Event::Vote { term } => Some(*term),
                    _ => None,
                })
                .max();
            if let Some(term) = max_vote {
                let vote = store.read_vote().await.unwrap().expect("a durable vote vanished");
                assert!(vote >= Vote::new(term, LEADER), "group {group}: vote {vote} < {term}");
            }
            for (position, event) in events.iter().enumerate() {
                let Event::Ack { index, term } = *event else { continue };
                if purged.is_some_and(|purged| index <= purged) {
                    continue;
                }
                let truncated_later = events[position + 1..]
                    .iter()
                    .any(|later| matches!(later, Event::Truncate { from } if *from <= index));
                match present.get(&index) {
                    Some(&found) if found == term => checked += 1,
                    Some(&found) if found > term && truncated_later => {}
                    None if truncated_later => {}
                    other => panic!(
                        "group {group}: acknowledged entry {index} (term {term}) lost: found {other:?}"
                    ),
                }
            }
        }
    });
    (checked, torn_bytes)
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    crash_rounds(ROUNDS, false);
}

/// The same rounds as power losses (see `run_child`). With
/// `QUARRY_TEST_POWERLOSS_OPTIONS=fsync-noop` it must fail.
#[test]
fn acknowledged_entries_survive_power_loss() {
    crash_rounds(POWER_LOSS_ROUNDS, true);
}

fn crash_rounds(rounds: u64, power_loss: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0xc4a5 ^ u64::from(power_loss));
    let mut history: HashMap<u64, Vec<Event>> = HashMap::new();
    let started = Instant::now();
    let mut acks = 0;
    for round in 0..rounds {
        for line in run_child(dir.path(), round, &mut rng, power_loss) {
            if let Some((group, event)) = parse(&line) {
                acks += u64::from(matches!(event, Event::Ack { .. }));
                history.entry(group).or_default().push(event);
            }
        }
        let (checked, torn_bytes) = verify(dir.path(), &history);
        eprintln!(
            "crash round {round} (power loss: {power_loss}): {acks} acknowledged so far, \
             {checked} checked present, {torn_bytes} torn bytes cut"
        );
    }
    assert!(acks > 1000, "too few acknowledged appends ({acks}) for the test to mean anything");
    assert!(started.elapsed() < Duration::from_secs(600));
}
