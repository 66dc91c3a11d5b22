//! The chunk matrix (chunks by goal and valid copies) and the copies each chunkserver holds,
//! counted chunk by chunk: in one go for a small file system, by the health loop's sweep
//! for a large one (see `requests::status`).

use std::collections::HashMap;
use std::time::Instant;

use moose_proto::msg::ChunkHealth;

use crate::namespace::ChunkMeta;
use crate::state::{Copy, State};

/// Counts over the chunks added so far.
#[derive(Debug, Clone)]
pub struct Tally {
    pub health: ChunkHealth,
    /// Copies per chunkserver id (any version).
    pub per_cs: HashMap<u32, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            health: ChunkHealth {
                matrix: vec![vec![0; 11]; 10],
                ..Default::default()
            },
            per_cs: HashMap::new(),
        }
    }
}

impl Tally {
    /// Every chunk of the file system, now.
    pub fn of_all(st: &State) -> Self {
        let mut t = Tally::default();
        for (&chunk_id, meta) in &st.meta.chunks {
            t.add_chunk(st, chunk_id, meta);
        }
        t
    }

    /// Counts chunk `chunk_id` (`meta`) as `st` has it now, and returns its goal (none: no
    /// file holds it) for a caller that decides on the chunk too.
    pub fn add_chunk(&mut self, st: &State, chunk_id: u64, meta: &ChunkMeta) -> Option<u8> {
        let goal = st.chunk_goal(chunk_id, meta.inode);
        let holders = st
            .rt
            .locations
            .get(&chunk_id)
            .map_or(&[][..], Vec::as_slice);
        self.add(goal, st.rt.counted_copies(chunk_id, meta.version), holders);
        goal
    }

    /// Counts one chunk: its goal (none: no file holds it), its valid copies and every copy.
    pub fn add(&mut self, goal: Option<u8>, copies: usize, holders: &[Copy]) {
        let goal = goal.map_or(0, usize::from).min(9);
        for c in holders {
            *self.per_cs.entry(c.cs).or_default() += 1;
        }
        let h = &mut self.health;
        h.matrix[goal][copies.min(10)] += 1;
        match copies {
            0 => h.missing += 1,
            c if c < goal && c == 1 => h.endangered += 1,
            c if c < goal => h.undergoal += 1,
            c if c == goal => h.stable += 1,
            _ => h.overgoal += 1,
        }
    }
}

/// The tally of the health loop's last complete sweep.
#[derive(Debug, Clone)]
pub struct Swept {
    pub tally: Tally,
    /// When the sweep ended.
    pub at: Instant,
}
