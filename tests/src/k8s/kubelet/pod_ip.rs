//! Pod IPs: a loopback address of its own for each pod, 127.A.B.C with A from the process id (as
//! `peer::unique_loopback`, whose addresses all end in .1) and C in 2..=254, so pod IPs never
//! collide with 127.0.0.1, with the peers' addresses or with another kubelet's of this process.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Result};

const PER_BLOCK: u32 = 253;
const BLOCKS: u32 = 250;

static TAKEN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A pod's IP, returned to the pool when dropped (after the pod's processes are gone).
#[derive(Debug)]
pub struct PodIp {
    index: u32,
    pub addr: Ipv4Addr,
}

impl PodIp {
    /// The lowest free address.
    pub fn allocate() -> Result<PodIp> {
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = (0..PER_BLOCK * BLOCKS).find(|i| !taken.contains(i)) else {
            bail!("all {} pod IPs of this process are in use", PER_BLOCK * BLOCKS);
        };
        taken.insert(index);
        Ok(PodIp { index, addr: address(std::process::id(), index) })
    }
}

impl Drop for PodIp {
    fn drop(&mut self) {
        TAKEN.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.index);
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
    fn a_released_ip_is_reused_and_live_ones_are_not() {
        let first = PodIp::allocate().unwrap();
        let second = PodIp::allocate().unwrap();
        assert_ne!(first.addr, second.addr);
        let released = first.addr;
        drop(first);
        let third = PodIp::allocate().unwrap();
        assert_ne!(third.addr, second.addr);
        assert!(third.addr == released || TAKEN.lock().unwrap().len() > 2);
    }
}
