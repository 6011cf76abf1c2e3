//! The context attributes of an event being decoded, shared by both content modes: where
//! each named attribute goes, and how the finished attributes become a validated event.

use std::collections::BTreeMap;

use super::validate::required;
use super::{CloudEvent, Data, DecodeError, SpecVersion};

/// Attributes collected so far; nothing is validated until [`Attributes::finish`].
#[derive(Default)]
pub(super) struct Attributes {
    pub id: Option<String>,
    pub source: Option<String>,
    pub ty: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub extensions: BTreeMap<String, String>,
}

impl Attributes {
    /// Where the context attribute `name` of `version` is kept; `None` when `name` is not a
    /// context attribute (so an extension, unless the mode gives it a meaning of its own).
    pub fn slot(&mut self, version: SpecVersion, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "datacontenttype" => &mut self.datacontenttype,
            "subject" => &mut self.subject,
            "time" => &mut self.time,
            other if other == version.dataschema_name() => &mut self.dataschema,
            _ => return None,
        })
    }

    /// The event, refused when a required attribute is missing or any rule is broken.
    pub fn finish(
        self,
        version: SpecVersion,
        data: Option<Data>,
    ) -> Result<CloudEvent, DecodeError> {
        let event = CloudEvent {
            specversion: version,
            id: required("id", self.id)?,
            source: required("source", self.source)?,
            ty: required("type", self.ty)?,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            subject: self.subject,
            time: self.time,
            extensions: self.extensions,
            data,
        };
        event.validate()?;
        Ok(event)
    }
}
