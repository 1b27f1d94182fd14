//! Bounded collection of entries and flags, hard-link bookkeeping, totals.
//!
//! The lists keep the first `max_entries` paths in byte order, so a
//! truncated diff is deterministic whatever order the walk met the paths in:
//! entries go to a plain vector until a bound is reached, which then becomes
//! a max-heap that evicts the largest path. Memory is bounded by the entry
//! count and by a byte budget on the paths kept. Touched paths have a bound
//! of their own, so that a flood of them never pushes a real change out.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::model::{Entry, Flag, FlagKind, FsDiff, RawPath, Totals};

/// Bytes of path/target data the entry lists may hold.
const ENTRY_BYTES: usize = 256 << 20;
/// Bytes of path data the touched list may hold.
const TOUCHED_BYTES: usize = 64 << 20;
/// Bytes of path data the flag list may hold.
const FLAG_BYTES: usize = 64 << 20;
/// Bytes of path data the hard-link map may hold.
const LINK_BYTES: usize = 64 << 20;
/// Fixed cost charged per item, on top of its variable-size data.
const ITEM_COST: usize = 160;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cat {
    Added,
    Modified,
    Deleted,
    Touched,
}

struct Item {
    entry: Entry,
    cat: Cat,
    link: Option<(u64, u64)>,
}

impl Item {
    fn cost(&self) -> usize {
        ITEM_COST + self.entry.path.as_bytes().len() + self.entry.target.as_ref().map_or(0, |t| t.as_bytes().len())
    }
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.entry.path == o.entry.path
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        self.entry.path.cmp(&o.entry.path)
    }
}

/// Per upper inode with more than one link.
struct LinkInfo {
    /// The smallest path (bytes) seen for the inode.
    first: Vec<u8>,
    hash: Option<[u8; 32]>,
    bytes_counted: bool,
}

/// A list that keeps the `max` smallest paths within a byte budget.
struct Bounded {
    max: usize,
    budget: usize,
    /// Unordered until the first eviction.
    list: Vec<Item>,
    /// Used once a bound was hit (then `list` is empty).
    heap: Option<BinaryHeap<Item>>,
    bytes: usize,
    /// Something was left out.
    cut: bool,
}

impl Bounded {
    fn new(max: usize, budget: usize) -> Bounded {
        Bounded { max, budget, list: Vec::new(), heap: None, bytes: 0, cut: false }
    }

    fn would_keep(&self, path: &[u8]) -> bool {
        match &self.heap {
            None => self.list.len() < self.max,
            Some(h) => match h.peek() {
                Some(top) if h.len() >= self.max => path < top.entry.path.as_bytes(),
                Some(_) => true,
                None => self.max > 0,
            },
        }
    }

    fn push(&mut self, item: Item) {
        let cost = item.cost();
        if self.heap.is_none() {
            if self.list.len() < self.max && self.bytes + cost <= self.budget {
                self.bytes += cost;
                self.list.push(item);
                if self.list.len() == self.max {
                    // full: from now on a newcomer must beat the largest path
                    self.heap = Some(BinaryHeap::from(std::mem::take(&mut self.list)));
                }
                return;
            }
            self.heap = Some(BinaryHeap::from(std::mem::take(&mut self.list)));
        }
        let heap = self.heap.as_mut().expect("heap");
        self.cut = true;
        if let Some(top) = heap.peek() {
            if heap.len() >= self.max && item >= *top {
                return;
            }
        } else if self.max == 0 {
            return;
        }
        self.bytes += cost;
        heap.push(item);
        while heap.len() > self.max || self.bytes > self.budget {
            match heap.pop() {
                Some(out) => self.bytes -= out.cost(),
                None => break,
            }
        }
    }

    fn into_items(self) -> Vec<Item> {
        let mut items = match self.heap {
            Some(h) => h.into_vec(),
            None => self.list,
        };
        // the walk meets paths almost in order: this sort is cheap
        items.sort_unstable();
        items
    }
}

pub(crate) struct Collector {
    /// Added, modified and deleted entries.
    main: Bounded,
    touched: Bounded,
    flags: BinaryHeap<Flag>,
    flag_bytes: usize,
    links: HashMap<(u64, u64), LinkInfo>,
    link_bytes: usize,
    pub totals: Totals,
    /// Entries (not touched ones) or flags were left out.
    pub truncated: bool,
}

impl Collector {
    pub fn new(max: usize) -> Collector {
        Collector {
            main: Bounded::new(max, ENTRY_BYTES),
            touched: Bounded::new(max, TOUCHED_BYTES),
            flags: BinaryHeap::new(),
            flag_bytes: 0,
            links: HashMap::new(),
            link_bytes: 0,
            totals: Totals::default(),
            truncated: false,
        }
    }

    /// Whether an entry of `cat` at `path` would be listed now (so expensive
    /// details such as hashes are only computed for entries that are kept).
    pub fn would_keep(&self, path: &[u8], cat: Cat) -> bool {
        match cat {
            Cat::Touched => self.touched.would_keep(path),
            _ => self.main.would_keep(path),
        }
    }

    /// Lists an entry (counting is the caller's job). Evicts the largest path
    /// when over a bound.
    pub fn push(&mut self, entry: Entry, cat: Cat, link: Option<(u64, u64)>) {
        let item = Item { entry, cat, link };
        match cat {
            Cat::Touched => self.touched.push(item),
            _ => {
                self.main.push(item);
                self.truncated |= self.main.cut;
            }
        }
    }

    /// How many entries of every list were met so far (listed or not).
    pub fn seen(&self) -> u64 {
        let t = &self.totals;
        t.added + t.modified + t.deleted + t.touched
    }

    /// Flags `path` for `why`.
    pub fn flag(&mut self, path: &[u8], why: FlagKind) {
        let full = self.flags.len() >= self.main.max || self.flag_bytes > FLAG_BYTES;
        if full {
            self.truncated = true;
            match self.flags.peek() {
                Some(top) if (path, why) < (top.path.as_bytes(), top.why) => {}
                _ => return,
            }
        }
        self.flag_bytes += ITEM_COST + path.len();
        self.flags.push(Flag { path: RawPath::from_bytes(path), why });
        while self.flags.len() > self.main.max || self.flag_bytes > FLAG_BYTES {
            match self.flags.pop() {
                Some(out) => self.flag_bytes -= ITEM_COST + out.path.as_bytes().len(),
                None => break,
            }
        }
    }

    /// Records one upper path of an inode with several links (listed or not).
    pub fn note_link(&mut self, key: (u64, u64), path: &[u8]) {
        match self.links.get_mut(&key) {
            Some(info) => {
                if path < info.first.as_slice() {
                    self.link_bytes = self.link_bytes - info.first.len() + path.len();
                    info.first.clear();
                    info.first.extend_from_slice(path);
                }
            }
            None => {
                if self.link_bytes + ITEM_COST + path.len() > LINK_BYTES {
                    // links_to may be missing from here on: say so
                    self.truncated = true;
                    return;
                }
                self.link_bytes += ITEM_COST + path.len();
                self.links.insert(key, LinkInfo { first: path.to_vec(), hash: None, bytes_counted: false });
            }
        }
    }

    /// The hash already computed for a linked inode.
    pub fn link_hash(&self, key: (u64, u64)) -> Option<[u8; 32]> {
        self.links.get(&key).and_then(|i| i.hash)
    }

    pub fn set_link_hash(&mut self, key: (u64, u64), hash: [u8; 32]) {
        if let Some(i) = self.links.get_mut(&key) {
            i.hash = Some(hash);
        }
    }

    /// Adds a regular file's size to `totals.bytes`, once per inode.
    pub fn count_bytes(&mut self, key: Option<(u64, u64)>, size: u64) {
        if let Some(info) = key.and_then(|k| self.links.get_mut(&k)) {
            if info.bytes_counted {
                return;
            }
            info.bytes_counted = true;
        }
        self.totals.bytes = self.totals.bytes.saturating_add(size);
    }

    pub fn finish(self) -> FsDiff {
        let mut diff = FsDiff { totals: self.totals, truncated: self.truncated, ..FsDiff::default() };
        let items = self.main.into_items().into_iter().chain(self.touched.into_items());
        for mut item in items {
            if let Some(info) = item.link.and_then(|k| self.links.get(&k)) {
                if info.first.as_slice() != item.entry.path.as_bytes() {
                    item.entry.links_to = Some(RawPath::from_bytes(info.first.clone()));
                }
            }
            match item.cat {
                Cat::Added => diff.added.push(item.entry),
                Cat::Modified => diff.modified.push(item.entry),
                Cat::Deleted => diff.deleted.push(item.entry),
                Cat::Touched => diff.touched.push(item.entry),
            }
        }
        diff.flags = self.flags.into_sorted_vec();
        diff
    }
}
