//! The congestion window of outgoing requests (dht-rpc `_drain`): at most [`MAX_WINDOW`] sends
//! per slot and twice that over the four slots.

use super::config::MAX_WINDOW;

#[derive(Debug, Default)]
pub(crate) struct Congestion {
    i: usize,
    total: usize,
    window: [usize; 4],
}

impl Congestion {
    pub(crate) fn is_full(&self) -> bool {
        self.total >= 2 * MAX_WINDOW || self.window.get(self.i).copied().unwrap_or(0) >= MAX_WINDOW
    }
    pub(crate) fn send(&mut self) {
        self.total += 1;
        if let Some(w) = self.window.get_mut(self.i) {
            *w += 1;
        }
    }
    pub(crate) fn recv(&mut self) {
        if let Some(w) = self.window.get_mut(self.i)
            && *w > 0
        {
            *w -= 1;
            self.total = self.total.saturating_sub(1);
        }
    }
    pub(crate) fn drain(&mut self) {
        self.i = (self.i + 1) & 3;
        if let Some(w) = self.window.get_mut(self.i) {
            self.total = self.total.saturating_sub(*w);
            *w = 0;
        }
    }
}
