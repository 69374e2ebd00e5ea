//! The listen loop's bookkeeping (npm `hyperdht` 6.34 `Server._addHandshake`), sans-io:
//! [`Listener`] decides which PEER_HANDSHAKE copies get the msg2 already sent, which are left
//! unanswered, which start a new handshake (and with which holepunch slot), and which live slot
//! a PEER_HOLEPUNCH belongs to. The shell ([`super::server`]) does the I/O: it answers,
//! runs the responder, and holds each slot's channel to its session task, dropping the ones
//! [`Listener::poll_forget`] names.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::session::{PUNCH_DURATION, SERVER_CONNECT_TIMEOUT};

/// How long a handshake's msg2 is kept for duplicates (JS `handshakeClearWait`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// Most handshakes remembered for deduplication at once (bounded memory under floods).
const MAX_HANDSHAKES: usize = 1024;
/// Holepunch sessions (slots) a server keeps at once; older ones are dropped.
const MAX_PUNCH_SESSIONS: usize = 256;
/// How long a slot stays open: the session's wait for the first packet, then its punch.
const SLOT_LIFETIME: Duration = SERVER_CONNECT_TIMEOUT.saturating_add(PUNCH_DURATION);

/// A handshake's holepunch slot (the `id` a client's PEER_HOLEPUNCH names).
pub(crate) type Slot = u64;

/// What to do with one PEER_HANDSHAKE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeVerdict {
    /// A copy of a handshake already answered (sent through another relay): answer it with
    /// this same msg2.
    Repeat(Vec<u8>),
    /// Leave it unanswered (too many handshakes remembered).
    Ignore,
    /// A new handshake: run the responder with this slot, then report with
    /// [`Listener::handle_answered`].
    Answer {
        /// Its holepunch slot.
        slot: Slot,
    },
}

/// A handshake whose msg2 went out.
#[derive(Debug)]
struct Answered {
    at: Instant,
    msg2: Vec<u8>,
}

/// A handshake the responder is answering: its msg1 and when it arrived.
#[derive(Debug)]
struct InFlight {
    msg1: Vec<u8>,
    at: Instant,
}

/// The handshakes a listening server answered and the holepunch slots it holds.
#[derive(Debug, Default)]
pub(crate) struct Listener {
    /// By msg1 bytes: only handshakes that decrypted (junk cannot fill the table).
    answered: HashMap<Vec<u8>, Answered>,
    in_flight: HashMap<Slot, InFlight>,
    /// Open slots, by when their session started.
    slots: HashMap<Slot, Instant>,
    next_slot: Slot,
    /// Slots closed here whose channel the shell must drop.
    forget: VecDeque<Slot>,
}

impl Listener {
    /// A listener with nothing answered yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A PEER_HANDSHAKE carrying `msg1` arrived.
    pub(crate) fn handle_handshake(&mut self, msg1: &[u8], now: Instant) -> HandshakeVerdict {
        self.expire_slots(now);
        self.answered
            .retain(|_, a| now.duration_since(a.at) < HANDSHAKE_CLEAR_WAIT);
        if let Some(a) = self.answered.get(msg1) {
            return HandshakeVerdict::Repeat(a.msg2.clone());
        }
        if self.answered.len() >= MAX_HANDSHAKES {
            return HandshakeVerdict::Ignore;
        }
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        self.in_flight.insert(
            slot,
            InFlight {
                msg1: msg1.to_vec(),
                at: now,
            },
        );
        HandshakeVerdict::Answer { slot }
    }

    /// The responder finished the handshake of `slot`: `msg2` when one was sent (`None`: refused
    /// or failed), and whether a session now punches under the slot.
    pub(crate) fn handle_answered(
        &mut self,
        slot: Slot,
        msg2: Option<Vec<u8>>,
        punching: bool,
        now: Instant,
    ) {
        let Some(InFlight { msg1, at }) = self.in_flight.remove(&slot) else {
            return;
        };
        if punching {
            if self.slots.len() >= MAX_PUNCH_SESSIONS
                && let Some(oldest) = self
                    .slots
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k)
            {
                self.slots.remove(&oldest);
                self.forget.push_back(oldest);
            }
            self.slots.insert(slot, now);
        }
        // Only a handshake that decrypted is remembered: junk cannot fill the table.
        if let Some(msg2) = msg2 {
            self.answered.insert(msg1, Answered { at, msg2 });
        }
    }

    /// A PEER_HOLEPUNCH for `slot` arrived: true when the slot is open (pass it to its session).
    pub(crate) fn handle_holepunch(&mut self, slot: Slot, now: Instant) -> bool {
        self.expire_slots(now);
        self.slots.contains_key(&slot)
    }

    /// The session of `slot` ended (its task stopped taking rounds).
    pub(crate) fn handle_session_ended(&mut self, slot: Slot) {
        self.slots.remove(&slot);
    }

    /// A slot closed here (expired or evicted): the shell drops its channel.
    pub(crate) fn poll_forget(&mut self) -> Option<Slot> {
        self.forget.pop_front()
    }

    fn expire_slots(&mut self, now: Instant) {
        let forget = &mut self.forget;
        self.slots.retain(|slot, at| {
            let open = now.duration_since(*at) < SLOT_LIFETIME;
            if !open {
                forget.push_back(*slot);
            }
            open
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(l: &mut Listener, msg1: &[u8], now: Instant) -> Slot {
        match l.handle_handshake(msg1, now) {
            HandshakeVerdict::Answer { slot } => slot,
            v => panic!("expected a new handshake, got {v:?}"),
        }
    }

    #[test]
    fn copies_of_an_answered_handshake_get_the_same_msg2() {
        let mut l = Listener::new();
        let t = Instant::now();
        let slot = answer(&mut l, b"msg1", t);
        l.handle_answered(slot, Some(b"msg2".to_vec()), false, t);
        assert_eq!(
            l.handle_handshake(b"msg1", t + Duration::from_secs(1)),
            HandshakeVerdict::Repeat(b"msg2".to_vec())
        );
        // Forgotten after the clear wait: answered anew, with the next slot.
        let again = answer(&mut l, b"msg1", t + HANDSHAKE_CLEAR_WAIT);
        assert_eq!(again, slot + 1);
    }

    #[test]
    fn a_refused_or_failed_handshake_is_not_remembered() {
        let mut l = Listener::new();
        let t = Instant::now();
        let slot = answer(&mut l, b"junk", t);
        l.handle_answered(slot, None, false, t);
        assert!(matches!(
            l.handle_handshake(b"junk", t),
            HandshakeVerdict::Answer { .. }
        ));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut l = Listener::new();
        let t = Instant::now();
        for i in 0..MAX_HANDSHAKES {
            let m = i.to_le_bytes();
            let slot = answer(&mut l, &m, t);
            l.handle_answered(slot, Some(vec![1]), false, t);
        }
        assert_eq!(l.handle_handshake(b"one more", t), HandshakeVerdict::Ignore);
        // A copy of a remembered one is still answered.
        assert_eq!(
            l.handle_handshake(&0usize.to_le_bytes(), t),
            HandshakeVerdict::Repeat(vec![1])
        );
    }

    #[test]
    fn holepunches_reach_open_slots_until_they_expire_or_end() {
        let mut l = Listener::new();
        let t = Instant::now();
        let a = answer(&mut l, b"a", t);
        l.handle_answered(a, Some(vec![1]), true, t);
        let b = answer(&mut l, b"b", t);
        l.handle_answered(b, Some(vec![2]), false, t);
        assert!(l.handle_holepunch(a, t));
        assert!(!l.handle_holepunch(b, t), "no session punches under b");
        assert!(!l.handle_holepunch(99, t));
        assert!(l.handle_holepunch(a, t + SLOT_LIFETIME - Duration::from_millis(1)));
        assert_eq!(l.poll_forget(), None);
        assert!(!l.handle_holepunch(a, t + SLOT_LIFETIME));
        assert_eq!(l.poll_forget(), Some(a));
        let c = answer(&mut l, b"c", t);
        l.handle_answered(c, Some(vec![3]), true, t);
        l.handle_session_ended(c);
        assert!(!l.handle_holepunch(c, t));
    }

    #[test]
    fn the_oldest_slot_gives_way() {
        let mut l = Listener::new();
        let t = Instant::now();
        let mut first = None;
        for i in 0..=MAX_PUNCH_SESSIONS {
            let at = t + Duration::from_millis(i as u64);
            let slot = answer(&mut l, &i.to_le_bytes(), at);
            l.handle_answered(slot, Some(vec![0]), true, at);
            first.get_or_insert(slot);
        }
        let first = first.unwrap();
        assert_eq!(l.poll_forget(), Some(first));
        assert_eq!(l.poll_forget(), None);
        let later = t + Duration::from_secs(1);
        assert!(!l.handle_holepunch(first, later));
        assert!(l.handle_holepunch(first + 1, later));
    }
}
