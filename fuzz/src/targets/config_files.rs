//! The daemons' own files: `KEY = VALUE` configs, exports and hdd files.

use std::path::Path;

use moose_formats::{ChunkserverCfg, MasterCfg, MetaloggerCfg};

use crate::Target;

pub struct CfgFile;
pub struct ExportsFile;
pub struct HddFile;

const MASTER_CFG: &str = "# master\nDATA_PATH = /var/lib/moosefs\nWORKING_USER = mfs\n\
MATOCL_LISTEN_PORT = 9421 # inline\nMETADATA_SAVE_FREQ = 1\nREPLICATIONS_DELAY_INIT = 1h30m\n\
HDD_LEAVE_SPACE_DEFAULT = 256MiB\nCHUNKS_WRITE_REP_LIMIT = 2,1,1,4\nMATOCS_TIMEOUT=10\n";

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
        let path = Path::new("fuzz.cfg");
        // What parses renders back to text that parses to the same value.
        if let Ok(cfg) = MasterCfg::parse(path, &text) {
            assert_eq!(MasterCfg::parse(path, &cfg.render("")).ok(), Some(cfg));
        }
        if let Ok(cfg) = ChunkserverCfg::parse(path, &text) {
            assert_eq!(ChunkserverCfg::parse(path, &cfg.render("")).ok(), Some(cfg));
        }
        if let Ok(cfg) = MetaloggerCfg::parse(path, &text) {
            assert_eq!(MetaloggerCfg::parse(path, &cfg.render("")).ok(), Some(cfg));
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
        if let Ok(exports) = moose_common::exports::parse(Path::new("fuzz.cfg"), &text) {
            for line in &exports.lines {
                let _ = format!("{line:?}");
            }
        }
        for word in text.split_whitespace() {
            let _ = moose_common::exports::parse_address(word);
            let _ = moose_common::exports::parse_options(word);
        }
        let path = Path::new("fuzz.cfg");
        if let Ok(file) = moose_formats::exports::ExportsFile::parse(path, &text) {
            let again = moose_formats::exports::ExportsFile::parse(path, &file.render(""));
            assert_eq!(again.ok().map(|f| f.lines.len()), Some(file.lines.len()));
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
        let path = Path::new("/fuzz-hdd.cfg");
        if let Ok(file) = moose_formats::hdd::parse(path, &text) {
            let again = moose_formats::hdd::parse(path, &file.render("")).map(|f| f.entries);
            let strip = |mut entries: Vec<moose_formats::hdd::HddEntry>| {
                entries.iter_mut().for_each(|e| e.line = 0);
                entries
            };
            assert_eq!(again.ok().map(strip), Some(strip(file.entries)));
        }
    }
}
