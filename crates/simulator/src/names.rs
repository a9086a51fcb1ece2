//! Names for simulated people and partner firms.

use fastrand::Rng;

const FIRST: [&str; 24] = [
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Giulia", "Hiro", "Ines", "Jonas", "Kavya",
    "Liam", "Maya", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tess", "Umar", "Vera",
    "Wei", "Yara",
];

const LAST: [&str; 24] = [
    "Almeida",
    "Brandt",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quintero",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Wright",
    "Zhou",
];

/// Names of introducing-broker firms, top of the tree first.
pub const FIRMS: [&str; 6] = [
    "Meridian Partners",
    "Northgate Capital",
    "Bluewater Introducers",
    "Summit FX Referrals",
    "Harbor Trading Club",
    "Keystone Affiliates",
];

/// A random "First Last" name.
pub fn person(rng: &mut Rng) -> String {
    let first = FIRST[rng.usize(..FIRST.len())];
    let last = LAST[rng.usize(..LAST.len())];
    format!("{first} {last}")
}
