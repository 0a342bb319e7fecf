//! The append order of a partition: a FIFO ticket lock.
//!
//! A caller takes a [`Ticket`] synchronously, at the moment it calls `Partition::append`; the
//! ticket fixes its place in the partition's log before anything is awaited. The caller then
//! waits for its [`Ticket::turn`], runs the short critical section (maybe roll the segment,
//! assign offsets, copy into the write buffer) and releases the turn by dropping the [`Turn`],
//! which lets the next ticket in. So offsets follow the order of the calls, not the order in
//! which the callers' tasks happen to be polled, and a producer that pipelines requests gets its
//! records stored in request order while the writes and syncs of the requests overlap.
//!
//! glommio's `Semaphore` cannot serve here: a task that polls it while the released permit is
//! still on its way to the woken waiter takes the permit first, so a later append could
//! overtake an earlier one. A ticket whose holder gives up before its turn (its future was
//! dropped, or it failed validation) is skipped; one dropped during its turn ends the turn.
//! Owned by the partition's home shard; never crosses cores.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::future::poll_fn;

/// The FIFO order of one partition's appends (and of the operations that must not interleave
/// with them: truncation and close).
#[derive(Default)]
pub struct AppendOrder {
    /// The next ticket number to hand out.
    next: Cell<u64>,
    /// The ticket whose turn it is (or will be once its holder polls).
    serving: Cell<u64>,
    /// Tickets dropped before their turn; skipped when the turn reaches them.
    abandoned: RefCell<BTreeSet<u64>>,
    /// Wakers of tickets waiting for their turn, by ticket number.
    waiting: RefCell<BTreeMap<u64, Waker>>,
}

impl AppendOrder {
    pub fn new() -> Rc<AppendOrder> {
        Rc::new(AppendOrder::default())
    }

    /// Takes the next place in the order. Synchronous: the place is fixed by this call.
    pub fn ticket(self: &Rc<Self>) -> Ticket {
        let number = self.next.get();
        self.next.set(number + 1);
        Ticket {
            order: self.clone(),
            number,
            state: TicketState::Waiting,
        }
    }

    /// Number of tickets taken whose turn has not ended (waiting or running).
    pub fn queued(&self) -> u64 {
        self.next.get() - self.serving.get() - self.abandoned.borrow().len() as u64
    }

    /// Ends the turn of the ticket being served and hands the turn to the next live ticket.
    fn advance(&self) {
        let mut serving = self.serving.get() + 1;
        {
            let mut abandoned = self.abandoned.borrow_mut();
            while abandoned.remove(&serving) {
                serving += 1;
            }
        }
        self.serving.set(serving);
        let waker = self.waiting.borrow_mut().remove(&serving);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TicketState {
    Waiting,
    /// Its turn came and was handed to a [`Turn`] (which ends it), or it ended.
    Done,
}

/// A place in a partition's append order. Dropping it before its turn gives the place up.
pub struct Ticket {
    order: Rc<AppendOrder>,
    number: u64,
    state: TicketState,
}

impl Ticket {
    /// Waits until every earlier ticket's turn has ended, and returns this ticket's turn.
    pub async fn turn(mut self) -> Turn {
        let order = self.order.clone();
        let number = self.number;
        poll_fn(|cx| {
            if order.serving.get() == number {
                order.waiting.borrow_mut().remove(&number);
                Poll::Ready(())
            } else {
                order
                    .waiting
                    .borrow_mut()
                    .insert(number, cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        self.state = TicketState::Done;
        Turn { order }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.state == TicketState::Done {
            return;
        }
        self.order.waiting.borrow_mut().remove(&self.number);
        if self.order.serving.get() == self.number {
            // Its turn had come but was never taken: pass it on.
            self.order.advance();
        } else {
            self.order.abandoned.borrow_mut().insert(self.number);
        }
    }
}

/// The running turn of a ticket; dropping it lets the next ticket in.
pub struct Turn {
    order: Rc<AppendOrder>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutor;

    #[test]
    fn turns_follow_ticket_order_whatever_the_polling_order() {
        LocalExecutor::default().run(async {
            let order = AppendOrder::new();
            let log = Rc::new(RefCell::new(Vec::new()));
            let tickets: Vec<Ticket> = (0..6).map(|_| order.ticket()).collect();
            // Spawn in reverse so later tickets are polled first.
            let mut tasks = Vec::new();
            for (i, t) in tickets.into_iter().enumerate().rev() {
                let log = log.clone();
                tasks.push(glommio::spawn_local(async move {
                    let turn = t.turn().await;
                    log.borrow_mut().push(i);
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    drop(turn);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(*log.borrow(), vec![0, 1, 2, 3, 4, 5]);
            assert_eq!(order.queued(), 0);
        });
    }

    #[test]
    fn an_abandoned_ticket_is_skipped() {
        LocalExecutor::default().run(async {
            let order = AppendOrder::new();
            let first = order.ticket();
            let second = order.ticket();
            let third = order.ticket();
            let turn = first.turn().await;
            drop(second);
            let waiter = glommio::spawn_local(async move {
                drop(third.turn().await);
            });
            drop(turn);
            waiter.await;
            // The turn came to a ticket that never asked for it, and it was dropped: passed on.
            let fourth = order.ticket();
            let fifth = order.ticket();
            drop(fourth);
            drop(fifth.turn().await);
            assert_eq!(order.queued(), 0);
        });
    }
}
