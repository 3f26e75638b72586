//! The network check after a join (pure): the IPv4 network a camera hotspot leased us must
//! be one a camera's hotspot could give, and nothing the box already reaches another way.
//! A rogue access point with the factory SSID that leases `10.0.0.2/1`, or a /25 inside the
//! depot LAN, fails it; the agent leaves such a hotspot and marks it suspicious.

use std::fmt;
use std::net::Ipv4Addr;

/// The widest network a camera hotspot may lease (a /24: a phone or a camera hands out
/// one small subnet).
pub const WIDEST_PREFIX: u8 = 24;

/// An IPv4 network: an address and its prefix length (0..=32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    /// `addr/prefix`, or None when the prefix is over 32.
    pub fn new(addr: Ipv4Addr, prefix: u32) -> Option<Net> {
        u8::try_from(prefix)
            .ok()
            .filter(|p| *p <= 32)
            .map(|prefix| Net { addr, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The network's first address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & Net::mask(self.prefix))
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = Net::mask(self.prefix);
        u32::from(ip) & m == u32::from(self.addr) & m
    }

    /// Whether the two networks share any address (one contains the other's first address,
    /// with the shorter prefix).
    pub fn overlaps(&self, other: &Net) -> bool {
        let m = Net::mask(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// Why a hotspot's network is suspicious.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Suspicion {
    #[error("the hotspot leased no IPv4 address")]
    NoAddress,
    #[error("the hotspot leased {0}, wider than /{WIDEST_PREFIX}")]
    TooWide(Net),
    #[error("the hotspot leased {lease}, which overlaps {other}, routed by another device")]
    Overlaps { lease: Net, other: Net },
    #[error("the hotspot leased {lease}, which does not hold the camera's address {camera}")]
    CameraOutside { lease: Net, camera: Ipv4Addr },
    #[error("the hotspot leased the camera's own address {camera} to this machine")]
    CameraAddress { camera: Ipv4Addr },
}

/// Checks the camera connection's addresses (`lease`, its `AddressData`) against the
/// networks other devices route (`others`: their addresses and routes; default routes and
/// loopback left out by the caller) and the camera's address. Every address leased must
/// pass; returns the first one.
pub fn check(lease: &[Net], others: &[Net], camera: Ipv4Addr) -> Result<Net, Suspicion> {
    let first = *lease.first().ok_or(Suspicion::NoAddress)?;
    for l in lease {
        if l.prefix < WIDEST_PREFIX {
            return Err(Suspicion::TooWide(*l));
        }
        if let Some(o) = others.iter().find(|o| o.prefix > 0 && l.overlaps(o)) {
            return Err(Suspicion::Overlaps {
                lease: *l,
                other: *o,
            });
        }
    }
    if lease.iter().any(|l| l.addr == camera) {
        return Err(Suspicion::CameraAddress { camera });
    }
    if !lease.iter().any(|l| l.contains(camera)) {
        return Err(Suspicion::CameraOutside {
            lease: first,
            camera,
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        let (a, p) = s.split_once('/').expect("a/p");
        Net::new(a.parse().expect("addr"), p.parse().expect("prefix")).expect("net")
    }

    const CAMERA: Ipv4Addr = Ipv4Addr::new(192, 168, 43, 1);

    #[test]
    fn a_camera_lease_passes() {
        let lan = [net("192.168.1.0/24"), net("10.20.0.0/16")];
        assert_eq!(
            check(&[net("192.168.43.57/24")], &lan, CAMERA),
            Ok(net("192.168.43.57/24"))
        );
        assert_eq!(
            check(&[net("192.168.43.5/28")], &lan, CAMERA).ok(),
            Some(net("192.168.43.5/28"))
        );
    }

    #[test]
    fn a_lease_of_the_cameras_own_address_is_suspicious() {
        assert_eq!(
            check(&[net("192.168.43.1/24")], &[], CAMERA),
            Err(Suspicion::CameraAddress { camera: CAMERA })
        );
    }

    #[test]
    fn rogue_leases_are_suspicious() {
        let lan = [net("192.168.1.0/24")];
        assert_eq!(
            check(&[net("10.0.0.2/1")], &lan, CAMERA),
            Err(Suspicion::TooWide(net("10.0.0.2/1")))
        );
        assert!(matches!(
            check(
                &[net("192.168.1.130/25")],
                &lan,
                Ipv4Addr::new(192, 168, 1, 129)
            ),
            Err(Suspicion::Overlaps { .. })
        ));
        assert!(matches!(
            check(&[net("172.16.5.2/24")], &lan, CAMERA),
            Err(Suspicion::CameraOutside { .. })
        ));
        assert_eq!(check(&[], &lan, CAMERA), Err(Suspicion::NoAddress));
        // A second address, wide, behind a good one.
        assert!(matches!(
            check(&[net("192.168.43.5/24"), net("10.0.0.2/8")], &lan, CAMERA),
            Err(Suspicion::TooWide(_))
        ));
    }

    #[test]
    fn nets_contain_and_overlap() {
        assert!(net("10.0.0.2/1").contains(Ipv4Addr::new(100, 1, 2, 3)));
        assert!(!net("10.0.0.2/1").contains(Ipv4Addr::new(192, 168, 43, 1)));
        assert!(net("0.0.0.0/0").overlaps(&net("1.2.3.4/32")));
        assert!(net("192.168.1.128/25").overlaps(&net("192.168.1.0/24")));
        assert!(!net("192.168.2.0/24").overlaps(&net("192.168.1.0/24")));
        assert_eq!(net("192.168.43.57/24").to_string(), "192.168.43.0/24");
        assert_eq!(Net::new(Ipv4Addr::LOCALHOST, 33), None);
    }
}
