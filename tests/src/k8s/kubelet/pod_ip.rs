//! Pod IPs: a loopback address of its own for each pod, 127.A.B.C with A from the process id (as
//! `peer::unique_loopback`, whose addresses all end in .1) and C in 2..=254, so pod IPs never
//! collide with 127.0.0.1, with the peers' addresses or with another kubelet's of this process.
//! Handed out in turn, as a CNI's IP allocator does: a restarted pod gets another IP, not the one
//! it just released.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Result};

const PER_BLOCK: u32 = 253;
const BLOCKS: u32 = 250;

/// The addresses in use, and where the next search starts.
struct Pool {
    taken: BTreeSet<u32>,
    next: u32,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { taken: BTreeSet::new(), next: 0 });

/// A pod's IP, returned to the pool when dropped (after the pod's processes are gone).
#[derive(Debug)]
pub struct PodIp {
    index: u32,
    pub addr: Ipv4Addr,
}

impl PodIp {
    /// The first free address after the last one handed out.
    pub fn allocate() -> Result<PodIp> {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        let size = PER_BLOCK * BLOCKS;
        let Some(index) = (0..size).map(|i| (pool.next + i) % size).find(|i| !pool.taken.contains(i)) else {
            bail!("all {size} pod IPs of this process are in use");
        };
        pool.taken.insert(index);
        pool.next = (index + 1) % size;
        Ok(PodIp { index, addr: address(std::process::id(), index) })
    }
}

impl Drop for PodIp {
    fn drop(&mut self) {
        POOL.lock().unwrap_or_else(PoisonError::into_inner).taken.remove(&self.index);
    }
}

fn address(pid: u32, index: u32) -> Ipv4Addr {
    let block = (pid / 250 + index / PER_BLOCK) % BLOCKS;
    Ipv4Addr::new(127, (pid % 250 + 2) as u8, (block + 1) as u8, (index % PER_BLOCK + 2) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_and_never_end_in_1() {
        let mut seen = BTreeSet::new();
        for pid in [1, 249, 250, 4_000_000] {
            for index in (0..PER_BLOCK * 3).chain([PER_BLOCK * BLOCKS - 1]) {
                let addr = address(pid, index);
                assert!(addr.is_loopback() && addr != Ipv4Addr::LOCALHOST, "{addr}");
                assert!(addr.octets()[3] >= 2 && addr.octets()[3] <= 254, "{addr}");
                assert!(seen.insert((pid, addr)), "{addr} twice for pid {pid}");
            }
        }
    }

    #[test]
    fn a_released_ip_is_not_handed_out_again_at_once() {
        let first = PodIp::allocate().unwrap();
        let second = PodIp::allocate().unwrap();
        assert_ne!(first.addr, second.addr);
        let released = first.addr;
        drop(first);
        let third = PodIp::allocate().unwrap();
        assert!(third.addr != second.addr && third.addr != released, "{third:?}");
    }
}
