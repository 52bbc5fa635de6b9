//! The command line. clap stays here: [`Cli`] is parsed and validated, then turned into the
//! core's configuration by the caller.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::names::Source;

const EXAMPLES: &str = "\
Examples:
  ssmfs /app /mnt/ssm                      mount SSM parameters under /app, in the background
  ssmfs -f ssm:/ /mnt/ssm --max-age 60     every parameter, in the foreground, refreshed after 60 s
  ssmfs /app /mnt/ssm --endpoint-url http://127.0.0.1:5000 --region us-east-1
                                           against a local emulator

Then: cat /mnt/ssm/db/password; echo 1 > /mnt/ssm/.refresh forces a refresh; umount /mnt/ssm.";

/// Mount AWS SSM Parameter Store as a read-only filesystem, with a max-age cache in front of
/// the API.
#[derive(Parser, Debug)]
#[command(name = "ssmfs", version, after_help = EXAMPLES)]
pub struct Cli {
    /// What to mount: an SSM path such as /app or ssm:/app (`/` for every parameter).
    pub source: Source,

    /// Where to mount it: an existing directory.
    pub mountpoint: PathBuf,

    /// How old, in seconds, a served value may be (as ssm-cache's max_age).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        help_heading = "Caching"
    )]
    pub max_age: u64,

    /// Show SecureString values as SSM returns them without decryption (the ciphertext).
    #[arg(long, help_heading = "Caching")]
    pub no_decrypt: bool,

    /// Send API calls to this URL instead of the region's SSM endpoint (AWS_ENDPOINT_URL works too).
    #[arg(long, value_name = "URL", help_heading = "AWS")]
    pub endpoint_url: Option<String>,

    /// AWS region (default: from AWS_REGION or the profile).
    #[arg(long, help_heading = "AWS")]
    pub region: Option<String>,

    /// Named profile from the AWS config and credentials files (default: AWS_PROFILE, or default).
    #[arg(long, help_heading = "AWS")]
    pub profile: Option<String>,

    /// Stay in the foreground. Without it, ssmfs returns once the mount is live and runs in the
    /// background.
    #[arg(short, long, help_heading = "Mount")]
    pub foreground: bool,

    /// Owner of every file and directory (default: the user running ssmfs).
    #[arg(long, help_heading = "Mount")]
    pub uid: Option<u32>,

    /// Group of every file and directory (default: the group running ssmfs).
    #[arg(long, help_heading = "Mount")]
    pub gid: Option<u32>,

    /// Let other users read the mount, as file modes allow (SecureString files stay 0400).
    #[arg(long, conflicts_with = "allow_root", help_heading = "Mount")]
    pub allow_other: bool,

    /// Let root read the mount too.
    #[arg(long, help_heading = "Mount")]
    pub allow_root: bool,

    /// Log level: error, warn, info, debug or trace. Values are never logged at any level.
    #[arg(long, env = "SSMFS_LOG", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"], help_heading = "Logging")]
    pub log_level: String,

    /// Write logs to this file instead of standard error (in the background, standard error is
    /// closed once the mount is live).
    #[arg(long, value_name = "PATH", help_heading = "Logging")]
    pub log_file: Option<PathBuf>,
}

impl Cli {
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age)
    }
}
