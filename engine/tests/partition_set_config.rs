//! A partition's log settings can be replaced while it is open (a topic config change), and the
//! next appends, rolls and timestamp decisions follow the new settings at once, with no reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::sync::Arc;

use common::*;
use sluice_engine::config::{LogConfig, MessageTimestampType};
use sluice_engine::durability::Durability;
use sluice_engine::partition::ShardContext;
use sluice_engine::types::Offset;

#[test]
fn new_settings_apply_to_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), || async move {
        let ctx = ShardContext::default();
        let cfg = small_segments(1 << 20);
        let p = open(&root, &cfg, &ctx).await;
        p.append(batch(1, 5000, 1000, 1), Durability::Written)
            .await
            .unwrap();

        // A lower max.message.bytes refuses the same batch with MESSAGE_TOO_LARGE.
        let limited = LogConfig {
            max_message_bytes: 1000,
            ..(*cfg).clone()
        };
        p.set_config(Arc::new(limited.clone()));
        assert_eq!(p.config().max_message_bytes, 1000);
        let refused = p
            .append(batch(1, 5000, 1000, 2), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(refused.kafka_code(), 10);
        assert_eq!(p.log_end_offset(), Offset(1));

        // LogAppendTime is stamped from the next append on.
        p.set_config(Arc::new(LogConfig {
            message_timestamp_type: MessageTimestampType::LogAppendTime,
            ..limited
        }));
        let stamped = p
            .append(batch(1, 10, 1000, 3), Durability::Written)
            .await
            .unwrap();
        assert!(stamped.log_append_time > 1000);

        // A smaller segment.bytes rolls the active segment at the next append that overflows it.
        p.set_config(Arc::new(LogConfig {
            segment_bytes: 4096,
            ..(*cfg).clone()
        }));
        let before = p.segment_count();
        p.append(batch(1, 3000, 1000, 4), Durability::Written)
            .await
            .unwrap();
        assert!(p.segment_count() > before);
        p.close().await.unwrap();
    });
}
