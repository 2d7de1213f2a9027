//! Hosts of their own on one machine, for tests of what crosses a network:
//! network namespaces (`ip netns`, from iproute2), each joined by a veth
//! pair to a bridge, each with its own address on a /24 that the test
//! process (on the bridge too) reaches directly.
//!
//! A second network shares the bridge, the *outside* (`10.214.S.0/24`):
//! the test process has an address there too ([`Hosts::outside_gateway`]),
//! and a host joins it only when told ([`Hosts::reach_outside`]). No host
//! has a route from one network to the other, so a host on the first alone
//! reaches the outside only through a host on both: a proxy, say. Needs
//! `CAP_NET_ADMIN`:
//! [`Hosts::create`] says why it cannot where namespaces are not allowed,
//! so a test can skip with that reason. Everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

/// Namespaced hosts on one bridge.
pub struct Hosts {
    /// Short and unique per test process: interface names hold 15 bytes.
    id: String,
    subnet: u8,
    count: usize,
}

impl Hosts {
    /// `count` hosts (at most 8), each with lo up and its own address.
    pub fn create(count: usize) -> Result<Self, String> {
        assert!(count <= 8, "at most 8 hosts");
        let pid = std::process::id();
        let mut hosts = Self {
            id: format!("rp{}", pid % 100_000),
            // Distinct subnets for test processes that run at once.
            subnet: u8::try_from(pid % 250).unwrap_or(0) + 1,
            count: 0,
        };
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.outside_gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..count {
            hosts.add(index)?;
            hosts.count = index + 1;
        }
        Ok(hosts)
    }

    /// The address of host `index`.
    pub fn addr(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + index as u8)
    }

    /// The test process's address on the outside network: what servers
    /// there listen on.
    pub fn outside_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.subnet, 1)
    }

    /// The address host `index` has on the outside network, once it
    /// [reaches it](Self::reach_outside).
    pub fn outside_addr(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.subnet, 10 + index as u8)
    }

    /// Gives host `index` a second address, on the outside network: a leg
    /// on both networks.
    pub fn reach_outside(&self, index: usize) -> Result<(), String> {
        ip(&[
            "netns",
            "exec",
            &self.namespace(index),
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.outside_addr(index)),
            "dev",
            &self.veth(index, 'b'),
        ])
    }

    /// `program` to be run on host `index` (`ip netns exec`, which execs
    /// it: the child's pid is the program's).
    pub fn command(&self, index: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let prefix = self.exec_prefix(index);
        let mut command = Command::new(&prefix[0]);
        command.args(&prefix[1..]).arg(program);
        command
    }

    /// What runs a program on host `index`: the words before the program.
    pub fn exec_prefix(&self, index: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace(index)]
            .map(str::to_owned)
            .to_vec()
    }

    fn add(&self, index: usize) -> Result<(), String> {
        let (namespace, outside, inside) = (
            self.namespace(index),
            self.veth(index, 'a'),
            self.veth(index, 'b'),
        );
        ip(&["netns", "add", &namespace])?;
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &namespace])?;
        ip(&["link", "set", &outside, "master", &self.bridge(), "up"])?;
        let within = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &namespace, "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        within(&["link", "set", "lo", "up"])?;
        within(&[
            "addr",
            "add",
            &format!("{}/24", self.addr(index)),
            "dev",
            &inside,
        ])?;
        within(&["link", "set", &inside, "up"])
    }

    fn namespace(&self, index: usize) -> String {
        format!("{}h{index}", self.id)
    }

    fn veth(&self, index: usize, end: char) -> String {
        format!("{}v{index}{end}", self.id)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.id)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A namespace's end of its veth goes with it, and the other end too.
        for index in 0..=self.count.min(7) {
            let _ = ip(&["netns", "del", &self.namespace(index)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Runs `ip ARGS`; its stderr as the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("running ip (iproute2): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
