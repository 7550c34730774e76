//! Evaluate a model on math benchmarks: greedy pass@1, and with `--k` also avg@k, pass@k and
//! maj@k, scored by the answer verifier.
//!
//! ```text
//! cargo run --release --example eval -- --model DIR --data FILE.jsonl [--data MORE.jsonl]
//!     [--k K] [--limit N] [--max-new-tokens N] [--out report.json]
//! ```
//!
//! `DIR` is an HF model directory (`config.json`, safetensors, `tokenizer.json`); data files are
//! JSONL in GSM8K, MATH or generic (`prompt`/`question` + `answer`) form. The markdown summary
//! goes to stdout, progress to stderr, the full report (per-category scores, first failures) to
//! `--out`. Run with `--help` for every option.

use bridge_core::{DeviceChoice, Result};
use bridge_eval::runner::{
    DatasetFormat, EvalConfig, EvalDataset, EvalProgress, PromptTemplate, SampledEval, evaluate_datasets,
};
use bridge_models::tokenizer::HfCodec;
use bridge_models::{Decoder, LoraAdapter, open_model};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse; see `docs/architecture.md` (CPU speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The instruction appended to each question unless `--instruction` or `--template` is given.
const DEFAULT_INSTRUCTION: &str = "Please reason step by step, and put your final answer within \\boxed{}.";

const USAGE: &str = "\
usage: eval --model DIR --data FILE.jsonl [options]

  --model DIR            HF model directory (config.json, *.safetensors, tokenizer.json)
  --adapter DIR          PEFT LoRA adapter directory applied on top of the model
  --data FILE.jsonl      benchmark file; repeat for several
  --format F             auto (default), gsm8k, math or generic
  --k K                  also sample K completions per prompt: avg@K, pass@j, maj@K
  --temperature T        sampling temperature (default 0.6)
  --top-p P              nucleus threshold (default 0.95; 1 disables)
  --no-greedy            skip the greedy pass@1 run (needs --k)
  --limit N              only the first N records of each file
  --max-new-tokens N     per completion (default 1024)
  --batch-size N         prompts per generation call (default 8)
  --seed S               sampling seed (default 0)
  --instruction TEXT     appended to each question inside the chat template
                         (default: \"Please reason step by step, and put your final answer within \\boxed{}.\";
                         \"\" for none)
  --template TEXT        plain prompt with {question}, no chat template (instead of --instruction)
  --stop STR             stop string; repeat for several
  --device D             flex (default) or cuda:N
  --out FILE             write the JSON report there
  --markdown FILE        also write the markdown summary there
  --keep-records         keep every completion's result in the JSON report
  -h, --help             this text";

/// Parsed command line.
struct Args {
    model: PathBuf,
    adapter: Option<PathBuf>,
    data: Vec<PathBuf>,
    format: DatasetFormat,
    device: DeviceChoice,
    out: Option<PathBuf>,
    markdown: Option<PathBuf>,
    config: EvalConfig,
}

/// Why the command line was refused.
enum ArgError {
    Help,
    Bad(String),
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> std::result::Result<T, ArgError> {
    value.parse().map_err(|_| ArgError::Bad(format!("{flag}: `{value}` is not a valid number")))
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> std::result::Result<Args, ArgError> {
    let mut argv = argv.into_iter();
    let (mut model, mut adapter, mut data, mut out, mut markdown) = (None, None, Vec::new(), None, None);
    let (mut format, mut device) = (DatasetFormat::Auto, DeviceChoice::Flex);
    let (mut k, mut temperature, mut top_p) = (None::<usize>, None::<f64>, None::<f64>);
    let (mut instruction, mut template) = (None::<String>, None::<String>);
    let mut config = EvalConfig::default();
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(ArgError::Help);
        }
        let boolean = match flag.as_str() {
            "--no-greedy" => {
                config.greedy = false;
                true
            }
            "--keep-records" => {
                config.keep_records = true;
                true
            }
            _ => false,
        };
        if boolean {
            continue;
        }
        let value = argv.next().ok_or_else(|| ArgError::Bad(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value)),
            "--adapter" => adapter = Some(PathBuf::from(value)),
            "--data" => data.push(PathBuf::from(value)),
            "--format" => format = value.parse().map_err(|e| ArgError::Bad(format!("--format: {e}")))?,
            "--device" => device = value.parse().map_err(|e| ArgError::Bad(format!("--device: {e}")))?,
            "--k" => k = Some(parse_num(&flag, &value)?),
            "--temperature" => temperature = Some(parse_num(&flag, &value)?),
            "--top-p" => top_p = Some(parse_num(&flag, &value)?),
            "--limit" => config.limit = Some(parse_num(&flag, &value)?),
            "--max-new-tokens" => config.max_new_tokens = parse_num(&flag, &value)?,
            "--batch-size" => config.batch_size = parse_num(&flag, &value)?,
            "--seed" => config.seed = parse_num(&flag, &value)?,
            "--instruction" => instruction = Some(value),
            "--template" => template = Some(value),
            "--stop" => config.stop_strings.push(value),
            "--out" => out = Some(PathBuf::from(value)),
            "--markdown" => markdown = Some(PathBuf::from(value)),
            other => return Err(ArgError::Bad(format!("unknown option `{other}`"))),
        }
    }
    let model = model.ok_or_else(|| ArgError::Bad("--model is required".into()))?;
    if data.is_empty() {
        return Err(ArgError::Bad("--data is required".into()));
    }
    config.prompt = match (instruction, template) {
        (Some(_), Some(_)) => return Err(ArgError::Bad("give --instruction or --template, not both".into())),
        (_, Some(template)) => PromptTemplate::Plain { template },
        (Some(i), None) if i.trim().is_empty() => PromptTemplate::default(),
        (Some(i), None) => PromptTemplate::chat_with(i),
        (None, None) => PromptTemplate::chat_with(DEFAULT_INSTRUCTION),
    };
    if k.is_none() && (temperature.is_some() || top_p.is_some()) {
        return Err(ArgError::Bad("--temperature and --top-p need --k".into()));
    }
    config.sampled = k.map(|k| {
        let d = SampledEval::with_k(k);
        SampledEval {
            temperature: temperature.unwrap_or(d.temperature),
            top_p: match top_p {
                Some(p) if p >= 1.0 => None,
                Some(p) => Some(p),
                None => d.top_p,
            },
            ..d
        }
    });
    config.validate().map_err(|e| ArgError::Bad(e.to_string()))?;
    Ok(Args { model, adapter, data, format, device, out, markdown, config })
}

fn run(args: &Args) -> Result<()> {
    let datasets = args.data.iter().map(|p| EvalDataset::load(p, args.format)).collect::<Result<Vec<_>>>()?;
    for d in &datasets {
        eprintln!("{}: {} records ({})", d.name, d.len(), d.format.name());
    }
    let device = args.device.device()?;
    let (config, weights) = open_model(&args.model, &device)?;
    let adapter = args.adapter.as_ref().map(|dir| LoraAdapter::load_peft(dir, &config, &device)).transpose()?;
    let codec = HfCodec::from_dir(&args.model)?;
    let lm = Decoder::new(config, Box::new(codec))?;
    eprintln!("model {} on {}", args.model.display(), args.device);

    let mut progress = |p: &EvalProgress| eprintln!("[{}] {} {}/{}", p.dataset, p.mode, p.done, p.total);
    let report = evaluate_datasets(&lm, &weights, adapter.as_ref(), &datasets, &args.config, &mut progress)?;
    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(path) = &args.out {
        report.write_json(path)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.markdown {
        report.write_markdown(path)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgError::Bad(message)) => {
            eprintln!("eval: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eval: {e}");
            ExitCode::FAILURE
        }
    }
}
