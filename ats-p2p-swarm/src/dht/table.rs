//! The Kademlia routing table (npm `kademlia-routing-table` 1.0): 256 rows of at most k nodes.

use std::net::SocketAddrV4;

use super::{Id, K, cmp_distance};

/// Number of rows: one per possible shared-prefix length.
const ROWS: usize = 256;

/// A node in the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNode {
    /// Its verified id (`H(addr)`).
    pub id: Id,
    /// Its server-socket address.
    pub addr: SocketAddrV4,
    /// Tick it was added.
    pub added: u64,
    /// Tick we last pinged it.
    pub pinged: u64,
    /// Tick we last heard from it.
    pub seen: u64,
}

/// Outcome of [`RoutingTable::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Inserted.
    Added,
    /// Already present (its entry was refreshed).
    Refreshed,
    /// Its row is full; the node was not inserted. Carries the row index.
    Full(usize),
    /// The id is our own.
    Own,
}

/// 256 rows, row `i` holds nodes sharing exactly `i` leading bits with our id.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    id: Id,
    rows: Vec<Vec<TableNode>>,
    len: usize,
}

impl RoutingTable {
    /// An empty table around `id`.
    pub fn new(id: Id) -> Self {
        Self {
            id,
            rows: vec![Vec::new(); ROWS],
            len: 0,
        }
    }

    /// Our id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row index for `id`: the number of leading bits it shares with ours (255 for our own id).
    pub fn row_of(&self, id: &Id) -> usize {
        for (i, (a, b)) in id.iter().zip(self.id.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        ROWS - 1
    }

    /// Adds or refreshes a node.
    pub fn add(&mut self, node: TableNode) -> AddOutcome {
        if node.id == self.id {
            return AddOutcome::Own;
        }
        let r = self.row_of(&node.id);
        let Some(row) = self.rows.get_mut(r) else {
            return AddOutcome::Own;
        };
        match row.binary_search_by(|n| n.id.cmp(&node.id)) {
            Ok(i) => {
                if let Some(n) = row.get_mut(i) {
                    n.addr = node.addr;
                    n.seen = node.seen;
                }
                AddOutcome::Refreshed
            }
            Err(i) => {
                if row.len() >= K {
                    return AddOutcome::Full(r);
                }
                row.insert(i, node);
                self.len += 1;
                AddOutcome::Added
            }
        }
    }

    /// The node with `id`.
    pub fn get(&self, id: &Id) -> Option<&TableNode> {
        let row = self.rows.get(self.row_of(id))?;
        let i = row.binary_search_by(|n| n.id.cmp(id)).ok()?;
        row.get(i)
    }

    /// The node with `id`, mutably.
    pub fn get_mut(&mut self, id: &Id) -> Option<&mut TableNode> {
        let r = self.row_of(id);
        let row = self.rows.get_mut(r)?;
        let i = row.binary_search_by(|n| n.id.cmp(id)).ok()?;
        row.get_mut(i)
    }

    /// Removes the node with `id`.
    pub fn remove(&mut self, id: &Id) -> Option<TableNode> {
        let r = self.row_of(id);
        let row = self.rows.get_mut(r)?;
        let i = row.binary_search_by(|n| n.id.cmp(id)).ok()?;
        self.len -= 1;
        Some(row.remove(i))
    }

    /// The nodes of row `r`.
    pub fn row(&self, r: usize) -> &[TableNode] {
        self.rows.get(r).map_or(&[], Vec::as_slice)
    }

    /// Up to `k` nodes closest to `target` by XOR distance, closest first.
    pub fn closest(&self, target: &Id, k: usize) -> Vec<TableNode> {
        let mut all: Vec<&TableNode> = self.rows.iter().flatten().collect();
        all.sort_by(|a, b| cmp_distance(target, &a.id, &b.id));
        all.into_iter().take(k).cloned().collect()
    }

    /// Every node.
    pub fn iter(&self) -> impl Iterator<Item = &TableNode> {
        self.rows.iter().flatten()
    }

    /// Replaces the table id (a node that became persistent), keeping the nodes that fit.
    pub fn rekey(&mut self, id: Id) {
        let nodes: Vec<TableNode> = self.rows.iter().flatten().cloned().collect();
        *self = Self::new(id);
        for n in nodes {
            self.add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8, i: u8) -> TableNode {
        let mut id = [0u8; 32];
        id[0] = b;
        id[31] = i;
        TableNode {
            id,
            addr: SocketAddrV4::new([127, 0, 0, 1].into(), u16::from(i) + 1),
            added: 0,
            pinged: 0,
            seen: 0,
        }
    }

    #[test]
    fn rows_fill_to_k_and_closest_sorts() {
        let mut t = RoutingTable::new([0u8; 32]);
        for i in 0..30u8 {
            let out = t.add(node(0x80, i));
            if i < 20 {
                assert_eq!(out, AddOutcome::Added);
            } else {
                assert_eq!(out, AddOutcome::Full(0));
            }
        }
        assert_eq!(t.len(), 20);
        assert_eq!(t.add(node(0x80, 3)), AddOutcome::Refreshed);
        t.add(node(0x01, 1));
        let mut target = [0u8; 32];
        target[0] = 0x01;
        let c = t.closest(&target, 3);
        assert_eq!(c.first().unwrap().id[0], 0x01);
        assert!(t.remove(&node(0x01, 1).id).is_some());
        assert_eq!(t.len(), 20);
    }
}
