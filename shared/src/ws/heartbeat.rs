//! Liveness of a connection as a pure function of time: when to ping, and when to give up.

use core::time::Duration;

/// Tracks when the peer was last heard from. Either side uses one: the server sends WebSocket
/// pings, the browser client `{"op":"ping"}` frames (it cannot send WebSocket pings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    last_heard: Duration,
    ping_sent: Option<Duration>,
}

/// What the heartbeat asks for at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Nothing until this time.
    WaitUntil(Duration),
    /// Send a ping now.
    Ping,
    /// The peer answered nothing in time: the connection is dead.
    TimedOut,
}

impl Heartbeat {
    /// A heartbeat that pings after `interval` of silence and gives up `timeout` after a ping.
    pub fn new(now: Duration, interval: Duration, timeout: Duration) -> Self {
        Heartbeat {
            interval,
            timeout,
            last_heard: now,
            ping_sent: None,
        }
    }

    /// The peer was heard from (any frame, a pong included).
    pub fn heard(&mut self, now: Duration) {
        self.last_heard = self.last_heard.max(now);
        self.ping_sent = None;
    }

    /// The next deadline, without acting on it.
    pub fn deadline(&self) -> Duration {
        match self.ping_sent {
            Some(sent) => sent.saturating_add(self.timeout),
            None => self.last_heard.saturating_add(self.interval),
        }
    }

    /// What to do at `now`; a `Ping` is reported once, then the timeout runs.
    pub fn poll(&mut self, now: Duration) -> HeartbeatAction {
        let deadline = self.deadline();
        if now < deadline {
            return HeartbeatAction::WaitUntil(deadline);
        }
        match self.ping_sent {
            Some(_) => HeartbeatAction::TimedOut,
            None => {
                self.ping_sent = Some(now);
                HeartbeatAction::Ping
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn pings_after_silence_and_times_out_without_answer() {
        let mut h = Heartbeat::new(S(100), S(20), S(10));
        assert_eq!(h.poll(S(110)), HeartbeatAction::WaitUntil(S(120)));
        assert_eq!(h.poll(S(121)), HeartbeatAction::Ping);
        assert_eq!(h.poll(S(125)), HeartbeatAction::WaitUntil(S(131)));
        assert_eq!(h.poll(S(131)), HeartbeatAction::TimedOut);
    }

    #[test]
    fn any_frame_answers_a_ping() {
        let mut h = Heartbeat::new(S(0), S(20), S(10));
        assert_eq!(h.poll(S(20)), HeartbeatAction::Ping);
        h.heard(S(25));
        assert_eq!(h.poll(S(40)), HeartbeatAction::WaitUntil(S(45)));
        // Traffic keeps the connection quiet: no ping while frames keep arriving.
        for t in (41..200).step_by(15) {
            h.heard(S(t));
            assert!(matches!(h.poll(S(t)), HeartbeatAction::WaitUntil(_)));
        }
    }

    #[test]
    fn a_clock_going_back_does_not_move_the_deadline_back() {
        let mut h = Heartbeat::new(S(50), S(20), S(10));
        h.heard(S(10));
        assert_eq!(h.deadline(), S(70));
    }
}
