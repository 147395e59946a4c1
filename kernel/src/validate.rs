//! Checks a model file before the engine sees it, so that a mistake is reported with its file,
//! line and fix rather than as the engine's generic parse failure.

use roxmltree::Document;

const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
const DMN_NS_PREFIX: &str = "https://www.omg.org/spec/DMN/";
const DMN_NS_PREFIX_OLD: &str = "http://www.omg.org/spec/DMN/";
const CAMUNDA_NS: &str = "http://camunda.org/schema/1.0/bpmn";

/// What is wrong with a model, where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) line: Option<u32>,
    pub(crate) column: Option<u32>,
    pub(crate) message: String,
    pub(crate) fix: String,
}

/// What a valid model holds that the kernel cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModelSummary {
    /// Ids of the executable processes.
    pub(crate) processes: Vec<String>,
    /// Topics of the external tasks, in document order, without repeats.
    pub(crate) topics: Vec<String>,
    /// Executable processes without `camunda:historyTimeToLive`: the engine's default applies,
    /// and an engine without one refuses them.
    pub(crate) without_history_ttl: Vec<String>,
}

/// The kinds of file the init directory deploys.
pub(crate) fn is_model_file(name: &str) -> bool {
    [".bpmn", ".dmn", ".form"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

pub(crate) fn check(name: &str, bytes: &[u8]) -> Result<ModelSummary, Finding> {
    if name.ends_with(".form") {
        return check_form(bytes).map(|()| ModelSummary::default());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| Finding {
        line: None,
        column: None,
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ),
        fix: "save the file as UTF-8, as Camunda Modeler does".into(),
    })?;
    let doc = Document::parse(text).map_err(|e| {
        if matches!(e, roxmltree::Error::DtdDetected) {
            return Finding {
                line: None,
                column: None,
                message: "the file declares a DTD (<!DOCTYPE …>), which no model may: a DTD can \
                          define entities that expand without bound or read other files and URLs, \
                          and BPMN, DMN and Camunda Modeler use none"
                    .into(),
                fix: "remove the <!DOCTYPE …> declaration (and the entities it defines)".into(),
            };
        }
        let pos = e.pos();
        Finding {
            line: Some(pos.row),
            column: Some(pos.col),
            message: format!("the XML is not well-formed: {e}"),
            fix:
                "repair the XML at that line, or open the file in Camunda Modeler and save it again"
                    .into(),
        }
    })?;
    if name.ends_with(".dmn") {
        check_dmn(&doc)
    } else {
        check_bpmn(&doc)
    }
}

fn at(doc: &Document, node: roxmltree::Node) -> (Option<u32>, Option<u32>) {
    let pos = doc.text_pos_at(node.range().start);
    (Some(pos.row), Some(pos.col))
}

fn check_bpmn(doc: &Document) -> Result<ModelSummary, Finding> {
    let root = doc.root_element();
    if root.tag_name().name() != "definitions" || root.tag_name().namespace() != Some(BPMN_NS) {
        let (line, column) = at(doc, root);
        return Err(Finding {
            line,
            column,
            message: format!(
                "the root element is <{}>, not BPMN 2.0's <definitions>",
                root.tag_name().name()
            ),
            fix: format!("a .bpmn file must be a BPMN 2.0 model (namespace {BPMN_NS})"),
        });
    }
    let processes: Vec<_> = root
        .children()
        .filter(|n| n.tag_name().name() == "process" && n.tag_name().namespace() == Some(BPMN_NS))
        .collect();
    let executable: Vec<String> = processes
        .iter()
        .filter(|p| p.attribute("isExecutable") == Some("true"))
        .map(|p| p.attribute("id").unwrap_or_default().to_owned())
        .collect();
    if executable.is_empty() {
        let node = processes.first().copied().unwrap_or(root);
        let (line, column) = at(doc, node);
        return Err(Finding {
            line,
            column,
            message: match processes.first().and_then(|p| p.attribute("id")) {
                Some(id) => format!("process `{id}` is not executable, so the engine would not deploy it"),
                None => "the model has no process".to_owned(),
            },
            fix: "set isExecutable=\"true\" on the <process> (Camunda Modeler: the process's \"Executable\" checkbox)"
                .into(),
        });
    }
    // A topic given as an expression (`${topic}`) is chosen per instance: it cannot be checked
    // against the fleet's table here; the kernel's unserved watch sees its tasks if they wait.
    let mut topics = Vec::new();
    for node in root.descendants() {
        if node.attribute((CAMUNDA_NS, "type")) == Some("external")
            && let Some(topic) = node.attribute((CAMUNDA_NS, "topic"))
            && !topic.contains("${")
            && !topic.contains("#{")
            && !topics.iter().any(|t| t == topic)
        {
            topics.push(topic.to_owned());
        }
    }
    let without_history_ttl = processes
        .iter()
        .filter(|p| p.attribute("isExecutable") == Some("true"))
        .filter(|p| p.attribute((CAMUNDA_NS, "historyTimeToLive")).is_none())
        .map(|p| p.attribute("id").unwrap_or_default().to_owned())
        .collect();
    Ok(ModelSummary {
        processes: executable,
        topics,
        without_history_ttl,
    })
}

fn check_dmn(doc: &Document) -> Result<ModelSummary, Finding> {
    let root = doc.root_element();
    let in_dmn = root
        .tag_name()
        .namespace()
        .is_some_and(|ns| ns.starts_with(DMN_NS_PREFIX) || ns.starts_with(DMN_NS_PREFIX_OLD));
    if root.tag_name().name() != "definitions" || !in_dmn {
        let (line, column) = at(doc, root);
        return Err(Finding {
            line,
            column,
            message: format!(
                "the root element is <{}>, not DMN's <definitions>",
                root.tag_name().name()
            ),
            fix: "a .dmn file must be a DMN 1.3 model, as Camunda Modeler saves it".into(),
        });
    }
    Ok(ModelSummary::default())
}

fn check_form(bytes: &[u8]) -> Result<(), Finding> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map(|_| ())
        .map_err(|e| Finding {
            line: u32::try_from(e.line()).ok(),
            column: u32::try_from(e.column()).ok(),
            message: format!("the form is not valid JSON: {e}"),
            fix: "repair the JSON, or save the form again from Camunda Modeler".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="t">
  <bpmn:process id="p" isExecutable="true">
    <bpmn:serviceTask id="a" camunda:type="external" camunda:topic="echo"/>
    <bpmn:serviceTask id="b" camunda:type="external" camunda:topic="echo"/>
    <bpmn:serviceTask id="c" camunda:type="external" camunda:topic="python"/>
  </bpmn:process>
</bpmn:definitions>"#;

    #[test]
    fn a_good_model_lists_its_processes_and_topics() {
        let summary = check("x.bpmn", GOOD.as_bytes()).unwrap();
        assert_eq!(summary.processes, ["p"]);
        assert_eq!(summary.topics, ["echo", "python"]);
        let chosen_per_instance =
            GOOD.replace(r#"camunda:topic="python""#, r#"camunda:topic="${topic}""#);
        let summary = check("x.bpmn", chosen_per_instance.as_bytes()).unwrap();
        assert_eq!(summary.topics, ["echo"], "an expression is no topic");
        assert_eq!(
            summary.without_history_ttl,
            ["p"],
            "no historyTimeToLive on it"
        );
        let with_ttl = GOOD.replace(
            r#"isExecutable="true""#,
            r#"isExecutable="true" camunda:historyTimeToLive="P30D""#,
        );
        assert!(
            check("x.bpmn", with_ttl.as_bytes())
                .unwrap()
                .without_history_ttl
                .is_empty()
        );
    }

    #[test]
    fn malformed_xml_names_the_line() {
        let bad = GOOD.replace(
            "<bpmn:serviceTask id=\"c\" camunda:type=\"external\" camunda:topic=\"python\"/>",
            "<bpmn:serviceTask id=\"c\">",
        );
        let finding = check("x.bpmn", bad.as_bytes()).unwrap_err();
        assert!(finding.message.contains("not well-formed"), "{finding:?}");
        assert_eq!(finding.line, Some(8));
    }

    #[test]
    fn a_model_without_executable_process_is_refused_at_the_process() {
        let text = GOOD.replace("isExecutable=\"true\"", "isExecutable=\"false\"");
        let finding = check("x.bpmn", text.as_bytes()).unwrap_err();
        assert_eq!(finding.line, Some(4));
        assert!(
            finding.message.contains("`p` is not executable"),
            "{finding:?}"
        );
        assert!(finding.fix.contains("isExecutable"));
    }

    #[test]
    fn other_xml_and_bad_forms_are_refused() {
        assert!(
            check("x.bpmn", b"<html/>")
                .unwrap_err()
                .message
                .contains("<html>")
        );
        assert!(check("x.dmn", GOOD.as_bytes()).is_err());
        assert_eq!(check("x.form", b"{\n\"a\": }").unwrap_err().line, Some(2));
    }
}
