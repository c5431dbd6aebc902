//! Model cards (README.md with Hub front matter) for the artifacts this project writes.

#[derive(Clone, Debug, Default)]
pub struct ModelCard {
    pub title: String,
    /// The model the artifact was made from (path or Hub id).
    pub base_model: String,
    /// One line: what was done ("GPTQ 4-bit, group 64, act-order, 128 calibration samples").
    pub method: String,
    /// The storage format and who loads it.
    pub format: String,
    pub tags: Vec<String>,
    /// Settings as (name, value) rows.
    pub settings: Vec<(String, String)>,
    /// The command that made it.
    pub command: String,
    /// Measured quality as (metric, value) rows; empty until a gate run fills it.
    pub quality: Vec<(String, String)>,
}

impl ModelCard {
    pub fn render(&self) -> String {
        let mut s = String::from("---\n");
        if !self.base_model.is_empty() {
            s += &format!("base_model: {}\n", yaml_str(&self.base_model));
        }
        s += "library_name: transformers\npipeline_tag: text-generation\ntags:\n";
        for t in ["quantized"]
            .iter()
            .map(|t| t.to_string())
            .chain(self.tags.iter().cloned())
        {
            s += &format!("- {}\n", yaml_str(&t));
        }
        s += "---\n\n";
        s += &format!("# {}\n\n", self.title);
        s += &format!("{}\n\n", self.method);
        s += &format!("**Format:** {}\n\n", self.format);
        if !self.settings.is_empty() {
            s += "## Settings\n\n| setting | value |\n|---|---|\n";
            for (k, v) in &self.settings {
                s += &format!("| {} | {} |\n", md_cell(k), md_cell(v));
            }
            s += "\n";
        }
        if !self.quality.is_empty() {
            s += "## Quality\n\n| metric | value |\n|---|---|\n";
            for (k, v) in &self.quality {
                s += &format!("| {} | {} |\n", md_cell(k), md_cell(v));
            }
            s += "\n";
        }
        if !self.command.is_empty() {
            s += &format!("## Reproduce\n\n```\n{}\n```\n\nMade with [quantize](https://github.com/quantize-rs/quantize).\n", self.command);
        }
        s
    }
}

/// A YAML scalar, quoted when it could be misread.
fn yaml_str(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !s.is_empty()
    {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_front_matter_and_tables() {
        let c = ModelCard {
            title: "SmolLM2 GPTQ".into(),
            base_model: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            method: "GPTQ 4-bit".into(),
            format: "GPTQ".into(),
            tags: vec!["gptq".into(), "4-bit".into()],
            settings: vec![("bits".into(), "4".into()), ("note".into(), "a|b".into())],
            command: "quantize gptq ...".into(),
            quality: vec![],
        };
        let s = c.render();
        assert!(s.starts_with("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n"));
        assert!(s.contains("- quantized\n- gptq\n- 4-bit\n"));
        assert!(s.contains("| note | a\\|b |"));
        assert!(!s.contains("## Quality"));
    }
}
