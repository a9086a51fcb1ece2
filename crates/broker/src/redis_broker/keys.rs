//! Where a channel lives in Redis.
//!
//! Every key of one channel carries the channel name as a hash tag (`{portfolio:42}`),
//! so on Redis Cluster they share a slot and one Lua script may touch them all; the
//! pub/sub topic carries the same tag, so a sharded publish from that script stays
//! on the channel's shard.
//!
//! | key                          | type   | holds                                        |
//! |------------------------------|--------|----------------------------------------------|
//! | `tc:ch:{C}:meta`             | hash   | `epoch`, `seq`, `origin` (highest taken)     |
//! | `tc:ch:{C}:log`              | stream | stamped durable messages, id `<seq>-<ms>`    |
//! | `tc:ch:{C}:snap`             | string | the channel's snapshot                       |
//! | `tc:ch:{C}:ret`              | hash   | retained ephemeral values by key             |
//! | `tc:ch:{C}` (pub/sub topic)  |        | live frames to every node with a subscriber  |

/// Prefix of every channel key and topic.
const PREFIX: &str = "tc:ch:{";

/// The Redis names of one channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    pub meta: String,
    pub log: String,
    pub snap: String,
    pub ret: String,
    pub topic: String,
}

impl ChannelKeys {
    pub fn new(channel: &str) -> ChannelKeys {
        let topic = format!("{PREFIX}{channel}}}");
        ChannelKeys {
            meta: format!("{topic}:meta"),
            log: format!("{topic}:log"),
            snap: format!("{topic}:snap"),
            ret: format!("{topic}:ret"),
            topic,
        }
    }
}

/// The channel a pub/sub topic belongs to (`tc:ch:{prices:forex}` → `prices:forex`).
pub(crate) fn channel_of(topic: &str) -> Option<&str> {
    topic.strip_prefix(PREFIX)?.strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let keys = ChannelKeys::new("portfolio:42");
        assert_eq!(keys.meta, "tc:ch:{portfolio:42}:meta");
        assert_eq!(keys.topic, "tc:ch:{portfolio:42}");
        assert_eq!(channel_of(&keys.topic), Some("portfolio:42"));
        assert_eq!(channel_of("other"), None);
    }
}
