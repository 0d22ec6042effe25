//! Generated protobuf types of the signed formats: the pass payload, the trust list and the
//! status list. Only the core's format modules use them; nothing outside the crate sees them.

#![allow(missing_docs, clippy::doc_markdown)]

include!(concat!(env!("OUT_DIR"), "/epass.payload.v1.rs"));
