//! Resource limits of a loop's cgroup, in systemd's spellings: `MemoryMax=` (`"512M"`,
//! `"2G"`, `"50%"`, `"max"`), `TasksMax=` (an integer or `"max"`), `CPUQuota=`
//! (`"150%"`). The policy's `[limits]` keys are read with them (a bad value is
//! `file:line:col`, exit 78); [`crate::containment`] writes them to the loop's cgroup as
//! `memory.max`, `pids.max` and `cpu.max`.

use std::fmt;
use std::str::FromStr;

/// A memory limit: bytes, a share of the machine's memory, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Memory {
    Bytes(u64),
    /// Hundredths of a percent of the physical memory (10000 = all of it).
    Permyriad(u32),
    Max,
}

/// A number of processes, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pids {
    Count(u64),
    Max,
}

/// A CPU quota in hundredths of a percent of one CPU (15000 = one and a half CPUs), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cpu {
    Permyriad(u64),
    Max,
}

pub(crate) const MEMORY: &str = "write a size like \"512M\" or \"2G\" (K, M, G, T: powers of 1024), a share of the memory like \"50%\", or \"max\"";
pub(crate) const PIDS: &str = "write a number of processes like 512, or \"max\"";
pub(crate) const CPU: &str =
    "write a share of one CPU like \"50%\" or \"150%\" (1.5 CPUs), or \"max\"";

impl Memory {
    /// A number of bytes, more than 0.
    pub(crate) fn bytes(n: i128) -> Result<Memory, String> {
        let usable = u64::try_from(n).ok().filter(|b| *b > 0);
        usable
            .map(Memory::Bytes)
            .ok_or_else(|| format!("{n} is not a usable size; {MEMORY}"))
    }
}
impl FromStr for Memory {
    type Err = String;
    fn from_str(text: &str) -> Result<Memory, String> {
        let text = text.trim();
        if unlimited(text) {
            return Ok(Memory::Max);
        }
        if text.ends_with('%') {
            return match percent(text) {
                Some(p @ 1..=10000) => Ok(Memory::Permyriad(p as u32)),
                _ => Err(format!(
                    "{text:?} is not a share of the memory (more than 0 %, at most 100 %); {MEMORY}"
                )),
            };
        }
        match parse_size(text) {
            Some(b) if b > 0 => Ok(Memory::Bytes(b)),
            _ => Err(format!("{text:?} is not a size; {MEMORY}")),
        }
    }
}

impl Pids {
    /// A number of processes, more than 0.
    pub(crate) fn count(n: i128) -> Result<Pids, String> {
        let usable = u64::try_from(n).ok().filter(|n| *n > 0);
        let bad = || format!("{n} is not a usable number of processes; {PIDS}");
        usable.map(Pids::Count).ok_or_else(bad)
    }
}
impl FromStr for Pids {
    type Err = String;
    fn from_str(text: &str) -> Result<Pids, String> {
        match text.trim() {
            text if unlimited(text) => Ok(Pids::Max),
            text => match text.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Pids::Count(n)),
                _ => Err(format!("{text:?} is not a number of processes; {PIDS}")),
            },
        }
    }
}

impl FromStr for Cpu {
    type Err = String;
    fn from_str(text: &str) -> Result<Cpu, String> {
        let text = text.trim();
        if unlimited(text) {
            return Ok(Cpu::Max);
        }
        match percent(text) {
            Some(p) if p > 0 && p <= 100 * 100 * 10_000 => Ok(Cpu::Permyriad(p)),
            _ => Err(format!("{text:?} is not a CPU share; {CPU}")),
        }
    }
}

/// As the policy file writes it: `512M`, `50%`, `max`.
impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Memory::Bytes(b) => f.write_str(&show_size(*b)),
            Memory::Permyriad(p) => write!(f, "{}%", show_hundredths(u64::from(*p))),
            Memory::Max => f.write_str("max"),
        }
    }
}
/// As the policy file writes it: `150%`, `max`.
impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Cpu::Permyriad(p) => write!(f, "{}%", show_hundredths(*p)),
            Cpu::Max => f.write_str("max"),
        }
    }
}

/// `"12.5"` as hundredths (1250); at most two decimals.
fn hundredths(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 2 {
        return None;
    }
    let frac = format!("{frac:0<2}").parse::<u64>().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac)
}

/// `MemoryMax=`'s size: digits (a decimal fraction allowed) and an optional K, M, G, T,
/// P or E (powers of 1024); no unit means bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let (number, shift) = match text.chars().last()? {
        'K' => (&text[..text.len() - 1], 10),
        'M' => (&text[..text.len() - 1], 20),
        'G' => (&text[..text.len() - 1], 30),
        'T' => (&text[..text.len() - 1], 40),
        'P' => (&text[..text.len() - 1], 50),
        'E' => (&text[..text.len() - 1], 60),
        _ => (text, 0),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || (shift == 0 && !frac.is_empty()) {
        return None;
    }
    let unit = 1u64.checked_shl(shift)?;
    let mut bytes = whole.parse::<u64>().ok()?.checked_mul(unit)?;
    if !frac.is_empty() {
        let frac = frac.get(..frac.len().min(9))?;
        let scale = 10u64.pow(frac.len() as u32);
        let part = (frac.parse::<u128>().ok()? * unit as u128 / scale as u128) as u64;
        bytes = bytes.checked_add(part)?;
    }
    Some(bytes)
}

fn percent(text: &str) -> Option<u64> {
    hundredths(text.strip_suffix('%')?.trim())
}

fn unlimited(text: &str) -> bool {
    matches!(text, "max" | "infinity")
}

fn show_hundredths(p: u64) -> String {
    match p % 100 {
        0 => (p / 100).to_string(),
        f => format!("{}.{:02}", p / 100, f)
            .trim_end_matches('0')
            .to_string(),
    }
}

/// The largest unit that divides `bytes` exactly: `"512M"`, `"2G"`, `"1000"`.
pub(crate) fn show_size(bytes: u64) -> String {
    for (unit, shift) in [
        ("E", 60),
        ("P", 50),
        ("T", 40),
        ("G", 30),
        ("M", 20),
        ("K", 10),
    ] {
        if bytes >= 1 << shift && bytes & ((1u64 << shift) - 1) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

impl Cpu {
    /// `cpu.max`'s text for a period of 100 ms: `"150000 100000"`.
    pub(crate) fn cgroup_value(self) -> String {
        match self {
            // permyriad of one CPU × 100 000 µs / 10 000 = quota in µs per period.
            Cpu::Permyriad(p) => format!("{} 100000", (p * 10).max(1000)),
            Cpu::Max => "max 100000".into(),
        }
    }
}

impl Memory {
    /// `memory.max`'s text; `total` is the machine's memory in bytes (for a share).
    pub(crate) fn cgroup_value(self, total: u64) -> String {
        match self {
            Memory::Bytes(b) => b.to_string(),
            Memory::Permyriad(p) => (total as u128 * p as u128 / 10_000).to_string(),
            Memory::Max => "max".into(),
        }
    }
}

impl Pids {
    /// `pids.max`'s text.
    pub(crate) fn cgroup_value(self) -> String {
        match self {
            Pids::Count(n) => n.to_string(),
            Pids::Max => "max".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_systemd_reads_them() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1.5"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("20000000E"), None);
        assert_eq!(show_size(512 << 20), "512M");
        assert_eq!(show_size(1000), "1000");
    }

    #[test]
    fn quotas_become_cgroup_text() {
        assert_eq!(percent("150%"), Some(15000));
        assert_eq!(percent("12.5%"), Some(1250));
        assert_eq!(percent("12.555%"), None);
        assert_eq!(Cpu::Permyriad(15000).cgroup_value(), "150000 100000");
        assert_eq!(Cpu::Permyriad(1).cgroup_value(), "1000 100000");
        assert_eq!(show_hundredths(1250), "12.5");
        assert_eq!(Memory::Permyriad(5000).cgroup_value(1000), "500");
    }
}
