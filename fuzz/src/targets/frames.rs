//! Frames of every link, with valid kinds and lengths, through the frame reader and every
//! message decoder.

use moose_proto::frame::{encode, KIND_DATA, KIND_MSG};
use moose_proto::msg::*;
use moose_proto::{ChunkRef, Cred, Frame, FrameReader, Landed};

use crate::Target;

pub struct Frames;

/// Frame limit of the runs: small, so that announced lengths past it are refused.
const LIMIT: u32 = 64 * 1024;
/// Room `next_into` offers a payload: less than a block, so that larger ones are refused.
const ROOM: usize = 4096;

fn frame(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn msg<T: serde::Serialize>(m: &T) -> Vec<u8> {
    frame(KIND_MSG, &encode(m).unwrap_or_default())
}

impl Target for Frames {
    fn name(&self) -> &'static str {
        "frames"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let chunk = ChunkRef {
            chunk_id: 0x1234,
            version: 3,
        };
        let mut data = Vec::new();
        for field in [
            0u64.to_be_bytes().to_vec(),
            vec![0, 0, 0, 3],
            vec![0, 0, 0, 9],
        ] {
            data.extend_from_slice(&field);
        }
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend_from_slice(b"block data");
        vec![
            msg(&ClEnvelope {
                msgid: 7,
                req: ClRequest::Lookup {
                    parent: 1,
                    name: b"file".to_vec(),
                    cred: Cred::default(),
                },
            }),
            msg(&CsToMaster::ChunkLost(chunk)),
            msg(&CsToMaster::Nop),
            [msg(&MasterToCs::Nop), msg(&MlToMaster::Nop)].concat(),
            msg(&MasterToMl::DumpStart {
                cluster_id: 5,
                version: 10,
                size: 100,
            }),
            msg(&MasterToMl::Nop),
            frame(KIND_DATA, &data),
        ]
    }

    fn run(&self, input: &[u8]) {
        thread_local! {
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a tokio runtime");
        }
        RT.with(|rt| {
            rt.block_on(async {
                // Frames are read in turn by `next` and by `next_into` with room for less
                // than the largest payload (a chunkserver's write session reads with it).
                let mut r = FrameReader::with_limit(input, LIMIT);
                let mut room = vec![0u8; ROOM];
                for turn in 0.. {
                    let frame = if turn % 2 == 0 {
                        r.next().await
                    } else {
                        match r.next_into(&mut room).await {
                            Ok(Landed::Msg(body)) => Ok(Frame::Msg(body)),
                            Ok(Landed::Data(_, size)) => {
                                assert!(size <= ROOM, "{size} payload bytes in {ROOM} of room");
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    };
                    match frame {
                        Ok(frame) => frame.decode_as_every_message(),
                        Err(_) => break,
                    }
                }
            })
        });
    }
}
