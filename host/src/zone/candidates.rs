//! What the zone plan hands to balancers: the candidate endpoints of a tier with the
//! weight each should get now, and a small allocation-free set of endpoint indexes.

/// A small set of endpoint indexes (a bitset; no allocation up to 128 endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    inline: [u64; 2],
    spill: Vec<u64>,
}

impl NodeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `idx`.
    pub fn insert(&mut self, idx: usize) {
        let (w, b) = (idx / 64, idx % 64);
        if w < 2 {
            self.inline[w] |= 1 << b;
        } else {
            let w = w - 2;
            if self.spill.len() <= w {
                self.spill.resize(w + 1, 0);
            }
            self.spill[w] |= 1 << b;
        }
    }

    /// Whether `idx` is in the set.
    #[inline]
    pub fn contains(&self, idx: usize) -> bool {
        let (w, b) = (idx / 64, idx % 64);
        let word = if w < 2 {
            self.inline[w]
        } else {
            self.spill.get(w - 2).copied().unwrap_or(0)
        };
        word & (1 << b) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.inline == [0, 0] && self.spill.iter().all(|w| *w == 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.inline
            .iter()
            .chain(&self.spill)
            .map(|w| w.count_ones() as usize)
            .sum()
    }
}

/// One endpoint offered to the balancer, with the weight it should get now
/// (its configured weight scaled by slow start and by its tier's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the snapshot's endpoint list.
    pub idx: u32,
    /// Effective weight, > 0.
    pub weight: u32,
}

/// The endpoints a balancer may choose from, computed off the request path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateSet {
    /// Candidates in endpoint order.
    pub list: Vec<Candidate>,
    /// Membership by endpoint index.
    pub mask: NodeSet,
    /// Sum of the effective weights.
    pub total_weight: u64,
}

impl CandidateSet {
    /// Builds a set from candidates (zero weights are dropped).
    pub fn new(list: impl IntoIterator<Item = Candidate>) -> Self {
        let mut set = CandidateSet::default();
        for c in list {
            if c.weight == 0 {
                continue;
            }
            set.mask.insert(c.idx as usize);
            set.total_weight += u64::from(c.weight);
            set.list.push(c);
        }
        set
    }

    /// Whether nothing can be picked.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `idx` may be picked.
    #[inline]
    pub fn contains(&self, idx: usize) -> bool {
        self.mask.contains(idx)
    }
}
