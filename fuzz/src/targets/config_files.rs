//! The daemons' own files: `KEY = VALUE` configs, exports and hdd files.

use std::path::Path;

use moose_common::Config;

use crate::Target;

pub struct CfgFile;
pub struct ExportsFile;
pub struct HddFile;

const MASTER_CFG: &str = "# master\nDATA_PATH = /var/lib/moosefs\nWORKING_USER = mfs\n\
MATOCL_LISTEN_PORT = 9421 # inline\nMETADATA_SAVE_FREQ = 1\nREPLICATIONS_DELAY_INIT = 1h30m\n\
HDD_LEAVE_SPACE_DEFAULT = 256MiB\nCHUNKS_WRITE_REP_LIMIT = 2,1,1,4\nMATOCS_TIMEOUT=10\n";

const KEYS: &[&str] = &[
    "DATA_PATH",
    "WORKING_USER",
    "MATOCL_LISTEN_PORT",
    "METADATA_SAVE_FREQ",
    "REPLICATIONS_DELAY_INIT",
    "HDD_LEAVE_SPACE_DEFAULT",
    "CHUNKS_WRITE_REP_LIMIT",
    "MATOCS_TIMEOUT",
];

impl Target for CfgFile {
    fn name(&self) -> &'static str {
        "cfg"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            MASTER_CFG.as_bytes().to_vec(),
            b"A=1\nA = 2\n= x\nbad line\n".to_vec(),
        ]
    }

    fn run(&self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let mut cfg = Config::parse(Path::new("fuzz.cfg"), &text, KEYS);
        let _ = cfg.check_unknown_keys(&["NICE_LEVEL"]);
        for key in KEYS {
            let _ = cfg.get_u64(key, 1);
            let _ = cfg.get_port(key, 1);
            let _ = cfg.get_size(key, 1);
            let _ = cfg.get_duration_secs(key, 1);
            let _ = cfg.get_bool(key, false);
            let _ = cfg.get_path(key, "/x");
        }
    }
}

impl Target for ExportsFile {
    fn name(&self) -> &'static str {
        "exports"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            b"* / rw,alldirs,maproot=0:0\n* . rw\n".to_vec(),
            b"10.0.0.0/8 /data ro,mapall=1000:1000,password=secret,mingoal=2,maxgoal=3\n\
              192.168.1.1-192.168.1.20 /home rw,ignoregid,admin\n\
              172.16.0.0/255.240.0.0 / readonly # comment\n"
                .to_vec(),
        ]
    }

    fn run(&self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        if let Ok(exports) = moose_common::exports::Exports::parse(Path::new("fuzz.cfg"), &text) {
            for line in &exports.lines {
                let _ = format!("{line:?}");
            }
        }
        for word in text.split_whitespace() {
            let _ = moose_common::exports::parse_address(word);
            let _ = moose_common::exports::parse_options(word);
        }
    }
}

impl Target for HddFile {
    fn name(&self) -> &'static str {
        "hdd"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            b"/mnt/hdd1\n*/mnt/hdd2 1.5TiB\n/mnt/hdd3 -10%\n/mnt/hdd4 60%\n".to_vec(),
            b"# disks\n/mnt/a -5GiB\n  /mnt/b\t4GiB\n".to_vec(),
        ]
    }

    fn run(&self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let _ = moose_chunkserver::hdd::parse(Path::new("fuzz-hdd.cfg"), &text);
    }
}
