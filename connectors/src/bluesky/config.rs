//! `[bluesky]`: where documents come from and how their data keys map to flowdaq's tables.

use flowdaq_schemas::wire::check_identifier;
use serde::{Deserialize, Serialize};

/// The Bluesky ingest. Disabled while `listen` and `connect` are both empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlueskyConfig {
    /// SUB socket to bind, for `bluesky.callbacks.zmq.Publisher` to connect to
    /// (`tcp://127.0.0.1:5578`); empty binds none.
    pub listen: String,
    /// Outbound (PUB) ports of `bluesky-0MQ-proxy` instances to SUB-connect to.
    pub connect: Vec<String>,
    /// Only documents from Publishers with this prefix are read; empty reads every prefix.
    pub prefix: String,
    /// Source id of the `runs` and `readings` rows.
    pub source: String,
    /// Start-document key whose value names the run (`uid`, `scan_id`, `sample`). A run whose
    /// start lacks it, or whose value is not a valid run id, is named by its `uid`.
    pub run_id_key: String,
    /// Start-document key whose value is the reaction condition of every row of the run;
    /// empty for none.
    pub condition_key: String,
    /// Largest document read, in bytes; larger ones are refused before they are parsed.
    pub max_document_bytes: usize,
    /// Event data keys that hold spectra.
    pub spectra: Vec<SpectrumMapping>,
}

impl Default for BlueskyConfig {
    fn default() -> Self {
        BlueskyConfig {
            listen: String::new(),
            connect: Vec::new(),
            prefix: String::new(),
            source: "bluesky".into(),
            run_id_key: "uid".into(),
            condition_key: String::new(),
            max_document_bytes: 8 * 1024 * 1024,
            spectra: Vec::new(),
        }
    }
}

/// One event data key that holds a spectrum, and where its axis and integration time are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectrumMapping {
    /// The event data key of the intensities (a 1-D array).
    pub data_key: String,
    /// The key of the wavelength axis in nm: an event data key, or a configuration key of the
    /// descriptor (ophyd `kind='config'`).
    pub wavelength_key: String,
    /// Source id of the spectra; the data key when absent.
    #[serde(default)]
    pub source: Option<String>,
    /// Spectrum kind: `pl` (features computed), `absorbance`, `sample`, `dark` or `reference`.
    #[serde(default = "pl")]
    pub kind: String,
    /// Event data or configuration key of the integration time, in seconds (ophyd's
    /// `acquire_time` convention).
    #[serde(default)]
    pub integration_time_key: Option<String>,
    /// Integration time in ms when `integration_time_key` is absent or not in the documents.
    #[serde(default)]
    pub integration_time_ms: Option<f64>,
}

fn pl() -> String {
    "pl".into()
}

impl SpectrumMapping {
    /// The source id of the spectra.
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.data_key)
    }
}

impl BlueskyConfig {
    /// Whether any socket is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.connect.is_empty()
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let identifier = |what: &str, value: &str| {
            check_identifier(what, value).map_err(|e| format!("bluesky: {e}"))
        };
        identifier("bluesky.source", &self.source)?;
        if self.prefix.contains(' ') {
            return Err("bluesky.prefix may not contain a space".into());
        }
        if self.run_id_key.is_empty() {
            return Err("bluesky.run_id_key may not be empty (\"uid\" names runs by uid)".into());
        }
        if self.max_document_bytes < 1024 {
            return Err("bluesky.max_document_bytes must be at least 1024".into());
        }
        for (i, mapping) in self.spectra.iter().enumerate() {
            let at = format!("bluesky.spectra[{i}]");
            identifier(&format!("{at}.source"), mapping.source())?;
            if mapping.source() == self.source {
                return Err(format!(
                    "{at}: source {:?} is bluesky.source; give the spectra their own",
                    mapping.source()
                ));
            }
            if self.spectra[..i]
                .iter()
                .any(|m| m.source() == mapping.source())
            {
                return Err(format!(
                    "{at}: source {:?} is mapped twice",
                    mapping.source()
                ));
            }
            if mapping.wavelength_key.is_empty() || mapping.data_key.is_empty() {
                return Err(format!("{at}: data_key and wavelength_key are required"));
            }
            if !["pl", "absorbance", "sample", "dark", "reference"].contains(&mapping.kind.as_str())
            {
                return Err(format!(
                    "{at}.kind {:?} is not pl, absorbance, sample, dark or reference",
                    mapping.kind
                ));
            }
            match (mapping.integration_time_ms, &mapping.integration_time_key) {
                (Some(ms), _) if !(ms > 0.0 && ms <= 3_600_000.0) => {
                    return Err(format!("{at}.integration_time_ms must be in (0, 3600000]"))
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: give integration_time_key or integration_time_ms"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
