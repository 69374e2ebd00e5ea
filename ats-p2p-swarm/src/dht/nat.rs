//! The NAT sampler (npm `nat-sampler` 1.0): majority vote over the addresses peers saw us at.

use std::net::Ipv4Addr;

/// Ring size: 16 (host, port) samples and 16 host-only samples.
const SAMPLE_SLOTS: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: u32,
}

/// Keeps the last 16 address samples and derives our public host and port.
#[derive(Debug, Clone, Default)]
pub struct NatSampler {
    host: Option<Ipv4Addr>,
    port: u16,
    size: u32,
    threshold: u32,
    top: usize,
    // Slots hold indices into `pool`; a sample shared by several slots counts its hits once.
    slots: Vec<usize>,
    pool: Vec<Sample>,
    best_a: Option<usize>,
    best_b: Option<usize>,
}

impl NatSampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The majority host, if any.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.host
    }

    /// The majority port; 0 when the host is consistent but the port is not.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of samples added (saturates at 16).
    pub fn size(&self) -> u32 {
        self.size
    }

    fn bump(&mut self, host: Ipv4Addr, port: u16, inc: usize) -> usize {
        for i in 0..4usize {
            let j = (self.top.wrapping_sub(inc).wrapping_sub(2 * i)) & (SAMPLE_SLOTS - 1);
            let Some(&idx) = self.slots.get(j) else {
                break;
            };
            if let Some(s) = self.pool.get_mut(idx)
                && s.port == port
                && s.host == host
            {
                s.hits = s.hits.saturating_add(1);
                return idx;
            }
        }
        self.pool.push(Sample {
            host,
            port,
            hits: 1,
        });
        self.pool.len() - 1
    }

    /// Adds one observation of our address.
    pub fn add(&mut self, host: Ipv4Addr, port: u16) {
        let a = self.bump(host, port, 2);
        let b = self.bump(host, 0, 1);
        if self.slots.len() < SAMPLE_SLOTS {
            self.size += 1;
            self.threshold = self.size
                - if self.size < 4 {
                    0
                } else if self.size < 8 {
                    1
                } else if self.size < 12 {
                    2
                } else {
                    3
                };
            self.slots.push(a);
            self.slots.push(b);
            self.top += 2;
        } else {
            if self.top == SAMPLE_SLOTS {
                self.top = 0;
            }
            for new in [a, b] {
                if let Some(old) = self.slots.get(self.top).copied()
                    && let Some(s) = self.pool.get_mut(old)
                {
                    s.hits = s.hits.saturating_sub(1);
                }
                if let Some(slot) = self.slots.get_mut(self.top) {
                    *slot = new;
                }
                self.top += 1;
            }
        }
        let hits = |s: &Self, i: Option<usize>| i.and_then(|i| s.pool.get(i)).map_or(0, |x| x.hits);
        if self.best_a.is_none() || hits(self, self.best_a) < hits(self, Some(a)) {
            self.best_a = Some(a);
        }
        if self.best_b.is_none() || hits(self, self.best_b) < hits(self, Some(b)) {
            self.best_b = Some(b);
        }
        let sa = self.best_a.and_then(|i| self.pool.get(i)).copied();
        let sb = self.best_b.and_then(|i| self.pool.get(i)).copied();
        match (sa, sb) {
            (Some(sa), _) if sa.hits >= self.threshold => {
                self.host = Some(sa.host);
                self.port = sa.port;
            }
            (_, Some(sb)) if sb.hits >= self.threshold => {
                self.host = Some(sb.host);
                self.port = 0;
            }
            _ => {
                self.host = None;
                self.port = 0;
            }
        }
        self.compact();
    }

    // Drop pool entries no slot refers to, so the pool stays bounded (≤ 32 + 2 entries).
    fn compact(&mut self) {
        if self.pool.len() <= SAMPLE_SLOTS * 2 {
            return;
        }
        let mut map = vec![usize::MAX; self.pool.len()];
        let mut pool = Vec::with_capacity(SAMPLE_SLOTS + 2);
        let keep = |i: usize, pool: &mut Vec<Sample>, map: &mut Vec<usize>, src: &[Sample]| {
            if let (Some(m), Some(s)) = (map.get(i).copied(), src.get(i))
                && m == usize::MAX
            {
                pool.push(*s);
                if let Some(slot) = map.get_mut(i) {
                    *slot = pool.len() - 1;
                }
            }
        };
        let old = std::mem::take(&mut self.pool);
        for &i in &self.slots {
            keep(i, &mut pool, &mut map, &old);
        }
        for i in [self.best_a, self.best_b].into_iter().flatten() {
            keep(i, &mut pool, &mut map, &old);
        }
        for s in &mut self.slots {
            *s = map.get(*s).copied().unwrap_or(0);
        }
        self.best_a = self.best_a.and_then(|i| map.get(i).copied());
        self.best_b = self.best_b.and_then(|i| map.get(i).copied());
        self.pool = pool;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_and_random_port() {
        let h: Ipv4Addr = "1.2.3.4".parse().unwrap();
        let mut n = NatSampler::new();
        n.add(h, 10);
        assert_eq!((n.host(), n.port()), (Some(h), 10));
        n.add(h, 10);
        n.add(h, 10);
        assert_eq!((n.host(), n.port()), (Some(h), 10));
        let mut r = NatSampler::new();
        for p in 1..40 {
            r.add(h, p);
        }
        assert_eq!((r.host(), r.port()), (Some(h), 0));
        assert!(r.pool.len() <= 66);
    }
}
