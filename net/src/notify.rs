//! Append notifications for long-polling fetches.
//!
//! Each shard owns one [`AppendNotifier`] for the partitions whose home it is. A produce that
//! appended to a partition calls [`AppendNotifier::notify`] on the partition's home shard once
//! the append is readable (its high watermark moved); a fetch that found fewer than `min_bytes`
//! sends one [`AppendNotifier::wait_any`] job to the home shard of each partition it reads and
//! resumes as soon as the first of them answers, or when its deadline passes.
//!
//! Guarantees: a waiter never busy-polls (it sleeps on a waker until an append to one of its
//! partitions, its deadline, or its fetch being done); a waiter's registrations are removed
//! when it ends however it ends (the registry holds no stale wakers, so an idle partition polled
//! forever costs nothing); and a waiter whose fetch already answered (the shared `done` flag)
//! ends at the next wake-up instead of lingering until its deadline. Owned by its shard; never
//! crosses cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use sluice_engine::partition::Partition;
use sluice_engine::types::{Offset, TopicPartition};

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// One of the partitions has data past the offset the fetch waited at (or that offset is
    /// no longer readable, which the fetch must report).
    Ready,
    /// The deadline passed.
    Deadline,
    /// The fetch that started the wait has already answered.
    Cancelled,
}

/// Set once, when the broker starts to shut down: this shard's long-polling fetches stop
/// waiting and answer with what they have. A connection answers its in-flight requests before
/// it closes, so without it a shutdown would wait for every parked fetch's `max_wait_ms` (up to
/// the shutdown grace period), even for clients that had already gone.
///
/// Owned by its shard; never crosses cores.
pub struct ShutdownSignal {
    /// No units ever: waiters wait until it is closed.
    closed_on_shutdown: glommio::sync::Semaphore,
}

impl Default for ShutdownSignal {
    fn default() -> ShutdownSignal {
        ShutdownSignal {
            closed_on_shutdown: glommio::sync::Semaphore::new(0),
        }
    }
}

impl ShutdownSignal {
    /// Wakes every waiter, now and later.
    pub fn trigger(&self) {
        self.closed_on_shutdown.close();
    }

    /// Whether [`ShutdownSignal::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        // A closed semaphore refuses every acquire.
        self.closed_on_shutdown.try_acquire(1).is_err()
    }

    /// Resolves once [`ShutdownSignal::trigger`] has been called.
    pub async fn wait(&self) {
        // Fails (closed) at shutdown; nothing ever signals a unit.
        let _ = self.closed_on_shutdown.acquire(1).await;
    }
}

/// The registry of fetches waiting for appends on this shard's partitions.
///
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct AppendNotifier {
    waiters: RefCell<HashMap<TopicPartition, HashMap<u64, Waker>>>,
    next_id: Cell<u64>,
}

impl AppendNotifier {
    pub fn new() -> AppendNotifier {
        AppendNotifier::default()
    }

    /// Wakes every fetch waiting on `tp`. Called after an append to `tp` became readable.
    ///
    /// Runs on `tp`'s home shard.
    pub fn notify(&self, tp: &TopicPartition) {
        // Take the wakers out before waking: a woken waiter re-registers on its next poll, and
        // must not find the map borrowed.
        let woken = self.waiters.borrow_mut().remove(tp);
        if let Some(woken) = woken {
            for (_, waker) in woken {
                waker.wake();
            }
        }
    }

    /// How many waiter registrations exist (tests and metrics).
    pub fn registrations(&self) -> usize {
        self.waiters.borrow().values().map(HashMap::len).sum()
    }

    /// Waits until one of `parts` (each with the offset the fetch reads from) has data at that
    /// offset, until `deadline`, or until `done` is set by the fetch, whichever comes first.
    /// For a `committed` (read_committed) fetch, data counts once it is below the last stable
    /// offset: a transaction marker, not only an append, can end the wait.
    ///
    /// Runs on the home shard of every partition in `parts`.
    pub async fn wait_any(
        &self,
        parts: Vec<(Partition, Offset)>,
        deadline: Instant,
        done: Arc<AtomicBool>,
        committed: bool,
    ) -> WaitEnd {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let tps: Vec<TopicPartition> = parts
            .iter()
            .map(|(p, _)| p.topic_partition().clone())
            .collect();
        let _guard = Registration {
            notifier: self,
            id,
            tps: &tps,
        };
        let wait = WaitAny {
            notifier: self,
            id,
            parts: &parts,
            done: &done,
            committed,
        };
        let timer = async {
            glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now())).await;
            WaitEnd::Deadline
        };
        futures_lite::future::or(wait, timer).await
    }
}

/// Whether a fetch at `offset` would find something to return now: data (below the last
/// stable offset for a `committed` fetch), or an offset that is out of range (an error the
/// fetch must report).
fn has_news(p: &Partition, offset: Offset, committed: bool) -> bool {
    let readable_end = if committed {
        p.last_stable_offset()
    } else {
        p.high_watermark()
    };
    offset < readable_end || offset < p.log_start_offset() || offset > p.log_end_offset()
}

struct WaitAny<'a> {
    notifier: &'a AppendNotifier,
    id: u64,
    parts: &'a [(Partition, Offset)],
    done: &'a AtomicBool,
    committed: bool,
}

impl Future for WaitAny<'_> {
    type Output = WaitEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitEnd> {
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(WaitEnd::Cancelled);
        }
        if self
            .parts
            .iter()
            .any(|(p, offset)| has_news(p, *offset, self.committed))
        {
            return Poll::Ready(WaitEnd::Ready);
        }
        let mut waiters = self.notifier.waiters.borrow_mut();
        for (p, _) in self.parts {
            waiters
                .entry(p.topic_partition().clone())
                .or_default()
                .insert(self.id, cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Removes a waiter's registrations when its wait ends, however it ends.
struct Registration<'a> {
    notifier: &'a AppendNotifier,
    id: u64,
    tps: &'a [TopicPartition],
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.notifier.waiters.borrow_mut();
        for tp in self.tps {
            if let Some(map) = waiters.get_mut(tp) {
                map.remove(&self.id);
                if map.is_empty() {
                    waiters.remove(tp);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use sluice_engine::builder::BatchBuilder;
    use sluice_engine::compression::Codec;
    use sluice_engine::durability::Durability;
    use sluice_engine::partition::ShardContext;

    use super::*;

    fn one_record() -> bytes::Bytes {
        let mut b = BatchBuilder::new(Codec::None);
        b.append(1, None, Some(b"v"), &[]).unwrap();
        b.build().unwrap()
    }

    /// Runs `f` with a fresh partition inside a glommio executor.
    fn with_partition<F, Fut>(f: F)
    where
        F: FnOnce(Partition) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        glommio::LocalExecutor::default().run(async move {
            sluice_engine::io::prime_executor(&root).await.unwrap();
            let p = Partition::open(
                &root,
                TopicPartition::new("t", 0),
                Arc::new(Default::default()),
                ShardContext::default(),
            )
            .await
            .unwrap();
            f(p.clone()).await;
            p.close().await.unwrap();
        });
        drop(dir);
    }

    #[test]
    fn an_append_wakes_the_waiter_long_before_its_deadline() {
        with_partition(|p| async move {
            let notifier = Rc::new(AppendNotifier::new());
            let writer = {
                let (p, notifier) = (p.clone(), notifier.clone());
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    p.append(one_record(), Durability::Written).await.unwrap();
                    notifier.notify(p.topic_partition());
                })
            };
            let start = Instant::now();
            let end = notifier
                .wait_any(
                    vec![(p.clone(), Offset(0))],
                    start + Duration::from_secs(10),
                    Arc::new(AtomicBool::new(false)),
                    false,
                )
                .await;
            assert_eq!(end, WaitEnd::Ready);
            assert!(start.elapsed() < Duration::from_secs(2));
            assert_eq!(notifier.registrations(), 0, "no stale wakers");
            writer.await;
        });
    }

    #[test]
    fn a_quiet_partition_ends_at_the_deadline_and_leaves_nothing_behind() {
        with_partition(|p| async move {
            let notifier = AppendNotifier::new();
            let start = Instant::now();
            let end = notifier
                .wait_any(
                    vec![(p.clone(), Offset(0))],
                    start + Duration::from_millis(100),
                    Arc::new(AtomicBool::new(false)),
                    false,
                )
                .await;
            assert_eq!(end, WaitEnd::Deadline);
            assert!(start.elapsed() >= Duration::from_millis(100));
            assert_eq!(notifier.registrations(), 0);
        });
    }

    #[test]
    fn data_already_there_or_an_answered_fetch_end_the_wait_at_once() {
        with_partition(|p| async move {
            let notifier = AppendNotifier::new();
            p.append(one_record(), Durability::Written).await.unwrap();
            let far = Instant::now() + Duration::from_secs(10);
            let ready = notifier
                .wait_any(
                    vec![(p.clone(), Offset(0))],
                    far,
                    Arc::new(AtomicBool::new(false)),
                    false,
                )
                .await;
            assert_eq!(ready, WaitEnd::Ready);
            let done = notifier
                .wait_any(
                    vec![(p.clone(), Offset(1))],
                    far,
                    Arc::new(AtomicBool::new(true)),
                    false,
                )
                .await;
            assert_eq!(done, WaitEnd::Cancelled);
            // An offset past the log end is out of range: the fetch must report it now.
            let oor = notifier
                .wait_any(
                    vec![(p.clone(), Offset(99))],
                    far,
                    Arc::new(AtomicBool::new(false)),
                    false,
                )
                .await;
            assert_eq!(oor, WaitEnd::Ready);
        });
    }

    #[test]
    fn a_read_committed_waiter_waits_for_the_marker_not_the_append() {
        with_partition(|p| async move {
            let notifier = Rc::new(AppendNotifier::new());
            let mut b = BatchBuilder::new(Codec::None)
                .producer(5, 0, 0)
                .transactional(true);
            b.append(1, None, Some(b"v"), &[]).unwrap();
            p.append(b.build().unwrap(), Durability::Written)
                .await
                .unwrap();
            notifier.notify(p.topic_partition());
            let far = Instant::now() + Duration::from_secs(10);
            // The transaction's record is below the high watermark but not the LSO.
            let quick = notifier
                .wait_any(
                    vec![(p.clone(), Offset(0))],
                    Instant::now() + Duration::from_millis(100),
                    Arc::new(AtomicBool::new(false)),
                    true,
                )
                .await;
            assert_eq!(quick, WaitEnd::Deadline);
            let marker = {
                let (p, notifier) = (p.clone(), notifier.clone());
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    p.append_marker(5, 0, true, 0).await.unwrap();
                    notifier.notify(p.topic_partition());
                })
            };
            let start = Instant::now();
            let end = notifier
                .wait_any(
                    vec![(p.clone(), Offset(0))],
                    far,
                    Arc::new(AtomicBool::new(false)),
                    true,
                )
                .await;
            assert_eq!(end, WaitEnd::Ready);
            assert!(start.elapsed() < Duration::from_secs(2));
            assert_eq!(p.last_stable_offset(), Offset(2));
            marker.await;
        });
    }

    #[test]
    fn shutdown_wakes_every_waiter_and_later_ones_at_once() {
        glommio::LocalExecutor::default().run(async {
            let signal = Rc::new(ShutdownSignal::default());
            assert!(!signal.is_triggered());
            // Nothing wakes a waiter before the trigger.
            let early = futures_lite::future::or(
                async {
                    signal.wait().await;
                    true
                },
                async {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    false
                },
            )
            .await;
            assert!(!early);
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let signal = signal.clone();
                    glommio::spawn_local(async move { signal.wait().await })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(10)).await;
            signal.trigger();
            for w in waiters {
                w.await;
            }
            assert!(signal.is_triggered());
            // A wait that starts after the trigger does not wait.
            signal.wait().await;
        });
    }
}
