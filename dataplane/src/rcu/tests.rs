//! QSBR tests: readers racing a publishing writer never see a freed or partial version,
//! retired versions are freed once readers pass quiescent states, offline readers block
//! nothing, and a reader that never quiesces holds back exactly what it may be using.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A version whose contents readers can verify: `words` sum to `sum`. Dropping it counts
/// the drop and scribbles over the words first, so a reader of a freed version (or of
/// one being freed) sees a wrong sum rather than silently passing.
struct Version {
    number: u64,
    words: Vec<u64>,
    sum: u64,
    drops: Arc<AtomicUsize>,
}

impl Version {
    fn new(number: u64, drops: &Arc<AtomicUsize>) -> Version {
        let words: Vec<u64> = (0..64)
            .map(|i| number.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i)
            .collect();
        let sum = words.iter().fold(0u64, |a, w| a.wrapping_add(*w));
        Version {
            number,
            words,
            sum,
            drops: Arc::clone(drops),
        }
    }

    fn check(&self) -> u64 {
        let sum = self.words.iter().fold(0u64, |a, w| a.wrapping_add(*w));
        assert_eq!(sum, self.sum, "version {} is torn or freed", self.number);
        self.number
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        for w in &mut self.words {
            *w = 0xdead_beef;
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn readers_never_see_freed_versions_and_retired_ones_are_freed() {
    const VERSIONS: u64 = 5_000;
    let drops = Arc::new(AtomicUsize::new(0));
    let mut rcu = Rcu::new(Version::new(0, &drops));
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let mut reader = rcu.reader();
                let done = &done;
                s.spawn(move || {
                    let mut last = 0;
                    let mut batches = 0u64;
                    while !done.load(Ordering::Acquire) {
                        {
                            let version = reader.read();
                            let number = version.check();
                            assert!(number >= last, "went back from {last} to {number}");
                            last = number;
                            // A batch: re-check the same version a few times.
                            for _ in 0..8 {
                                assert_eq!(version.check(), number);
                            }
                        }
                        reader.quiesce();
                        batches += 1;
                        // Reader 2 also sleeps offline now and then, as a worker in epoll.
                        if r == 2 && batches % 16 == 0 {
                            let _offline = reader.offline();
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                    (last, batches)
                })
            })
            .collect();

        for n in 1..=VERSIONS {
            rcu.publish(Version::new(n, &drops));
            assert_eq!(rcu.current().check(), n);
        }
        // Readers keep quiescing, so everything retired is freed while they run.
        assert!(rcu.synchronize(Duration::from_secs(10)), "{rcu:?}");
        assert_eq!(drops.load(Ordering::SeqCst), VERSIONS as usize);
        done.store(true, Ordering::Release);
        for reader in readers {
            match reader.join() {
                Ok((last, batches)) => {
                    assert!(last <= VERSIONS);
                    assert!(batches > 0);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    assert_eq!(rcu.readers(), 0, "readers unregister when dropped");
    drop(rcu);
    // The last version goes with the writer.
    assert_eq!(drops.load(Ordering::SeqCst), VERSIONS as usize + 1);
}

#[test]
fn a_reader_that_has_not_quiesced_holds_back_what_it_may_use() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut rcu = Rcu::new(Version::new(0, &drops));
    let mut reader = rcu.reader();
    assert_eq!(reader.read().check(), 0);

    rcu.publish(Version::new(1, &drops));
    rcu.publish(Version::new(2, &drops));
    assert_eq!(rcu.pending(), 2, "the reader may still hold version 0");
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    // Without quiescing, the reader keeps seeing whatever it loads next; both loads are
    // of live versions.
    assert_eq!(reader.read().check(), 2);

    reader.quiesce();
    assert_eq!(rcu.reclaim(), 2);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(rcu.pending(), 0);

    // Retired after the reader's announcement: held again until the next one.
    rcu.publish(Version::new(3, &drops));
    assert_eq!(rcu.pending(), 1);
    reader.quiesce();
    assert_eq!(rcu.reclaim(), 1);
    assert_eq!(reader.read().check(), 3);
}

#[test]
fn offline_readers_block_nothing_and_come_back_to_the_latest_version() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut rcu = Rcu::new(Version::new(0, &drops));
    let mut reader = rcu.reader();
    {
        let _asleep = reader.offline();
        for n in 1..=10 {
            rcu.publish(Version::new(n, &drops));
        }
        assert_eq!(rcu.pending(), 0, "an offline reader holds nothing back");
        assert_eq!(drops.load(Ordering::SeqCst), 10);
    }
    // Online again: sees the latest version, and holds back the next retirement.
    assert_eq!(reader.read().check(), 10);
    rcu.publish(Version::new(11, &drops));
    assert_eq!(rcu.pending(), 1);
    drop(reader);
    assert_eq!(rcu.reclaim(), 1, "a dropped reader holds nothing back");
    assert_eq!(rcu.readers(), 0);
}

#[test]
fn a_reader_outliving_the_writer_keeps_the_last_version() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut rcu = Rcu::new(Version::new(0, &drops));
    let reader = rcu.reader();
    rcu.publish(Version::new(1, &drops));
    drop(rcu);
    assert_eq!(reader.read().check(), 1);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(reader);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}
