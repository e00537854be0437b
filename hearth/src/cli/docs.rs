//! `story`, `summary`, `graph` and `routes`: the living documentation,
//! read from what the modules declare. No configuration or database is
//! needed, so they run anywhere the binary does (CI included).

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::app::App;
use crate::usecase::docs::{self, GraphFormat, StoryFormat};

/// `story`.
#[derive(Debug, Args)]
pub(crate) struct StoryArgs {
    /// Only this module's use cases.
    module: Option<String>,
    /// Plain text, or Markdown for a docs page.
    #[arg(long, value_enum, default_value_t = StoryStyle::Text)]
    format: StoryStyle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoryStyle {
    Text,
    Markdown,
}

/// `summary`.
#[derive(Debug, Args)]
pub(crate) struct SummaryArgs {
    /// Exit 1 when any route, published event or subscription is uncovered.
    #[arg(long)]
    strict: bool,
}

/// `graph`.
#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// Only this module and the modules it shares events with.
    module: Option<String>,
    /// Graphviz dot, or Mermaid (which forge web pages render).
    #[arg(long, value_enum, default_value_t = GraphStyle::Dot)]
    format: GraphStyle,
    /// Only modules and events, without the routes.
    #[arg(long)]
    no_routes: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphStyle {
    Dot,
    Mermaid,
}

fn docs_of(app: &App) -> Result<Vec<docs::ModuleDoc>, ExitCode> {
    app.docs().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(super::EXIT_CONFIG)
    })
}

fn known(mods: &[docs::ModuleDoc], module: Option<&str>) -> Result<(), ExitCode> {
    match module {
        Some(m) if !mods.iter().any(|d| d.spec.name() == m) => {
            let names: Vec<&str> = mods.iter().map(|d| d.spec.name()).collect();
            eprintln!(
                "error: no module `{m}`; the modules are {}",
                names.join(", ")
            );
            Err(ExitCode::from(super::EXIT_CONFIG))
        }
        _ => Ok(()),
    }
}

pub(crate) fn story(app: &App, args: StoryArgs) -> ExitCode {
    let mods = match docs_of(app) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Err(code) = known(&mods, args.module.as_deref()) {
        return code;
    }
    let format = match args.format {
        StoryStyle::Text => StoryFormat::Text,
        StoryStyle::Markdown => StoryFormat::Markdown,
    };
    print!("{}", docs::story(&mods, args.module.as_deref(), format));
    ExitCode::SUCCESS
}

pub(crate) fn summary(app: &App, args: SummaryArgs) -> ExitCode {
    let mods = match docs_of(app) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let (text, gaps) = docs::summary(&mods);
    print!("{text}");
    if args.strict && !gaps.is_empty() {
        eprintln!("error: {} things no use case covers (--strict)", gaps.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

pub(crate) fn graph(app: &App, args: GraphArgs) -> ExitCode {
    let mods = match docs_of(app) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Err(code) = known(&mods, args.module.as_deref()) {
        return code;
    }
    let format = match args.format {
        GraphStyle::Dot => GraphFormat::Dot,
        GraphStyle::Mermaid => GraphFormat::Mermaid,
    };
    print!(
        "{}",
        docs::graph(&mods, args.module.as_deref(), format, !args.no_routes)
    );
    ExitCode::SUCCESS
}

pub(crate) fn routes(app: &App) -> ExitCode {
    match docs_of(app) {
        Ok(mods) => {
            print!("{}", docs::routes(&mods));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
