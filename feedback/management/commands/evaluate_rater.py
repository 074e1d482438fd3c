"""Rate every line of a labelled JSONL file and report agreement with the gold labels."""

import json
import sys
from argparse import ArgumentParser
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from feedback.evaluation import evaluate, format_table
from feedback.raters.bank import Example, read_jsonl
from feedback.raters.offline import rate_many
from feedback.skills import SKILL_KEYS, STRATEGIES


def _rate_llm(example: Example) -> dict[str, str]:
    from feedback.raters.llm import rate_with_model

    rating = rate_with_model(
        text=example.text,
        situation=example.situation,
        goal=example.goal,
        partner_said=example.partner_said,
        chosen=STRATEGIES,
    )
    return rating.levels


class Command(BaseCommand):
    help = (
        "Rate every line of FILE.jsonl on all seven DEAR MAN skills and print macro F1 "
        "(strong vs not strong; yes vs no), Cohen's kappa and confusion counts per skill."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("file", help="JSONL, one labelled message per line")
        parser.add_argument("--rater", choices=("offline", "llm"), default="offline")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--workers", type=int, default=4, help="parallel model calls with --rater llm"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            examples = read_jsonl(options["file"])
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from error
        if not examples:
            raise CommandError(f"{options['file']}: no lines to rate")

        if options["rater"] == "offline":
            predictions = rate_many(examples)
        else:
            predictions = self._rate_with_model(examples, max(1, options["workers"]))

        labelled = [i for i, e in enumerate(examples) if e.fully_labelled]
        if not labelled:
            raise CommandError(f"{options['file']}: no line carries labels for all seven skills")
        report = evaluate(
            [examples[i].labels for i in labelled], [predictions[i] for i in labelled]
        )

        if options["json"]:
            result = report.as_dict()
            result["predictions"] = [
                {"id": e.id, "ratings": {k: p[k] for k in SKILL_KEYS}}
                for e, p in zip(examples, predictions, strict=True)
            ]
            self.stdout.write(json.dumps(result, indent=None))
        else:
            self.stdout.write(f"rater: {options['rater']}   file: {options['file']}")
            self.stdout.write(format_table(report))
            self.stdout.write(
                "macro F1 = mean of the F1 of 'strong' (or yes) and 'not strong' (or no); "
                "kappa on that binary task, kappa3 on strong/weak/none."
            )

    def _rate_with_model(self, examples: list[Example], workers: int) -> list[dict[str, str]]:
        from feedback.raters.llm import model_configured

        if not model_configured():
            raise CommandError(
                "No language model is configured (LLM_BASE_URL is not set), so --rater llm "
                "cannot run. Set LLM_BASE_URL (and LLM_API_KEY, LLM_MODEL) or use --rater offline."
            )
        from imbue.llm import LLMError

        def attempt(example: Example) -> dict[str, str] | LLMError:
            try:
                return _rate_llm(example)
            except LLMError as error:
                return error
            finally:
                # Each pool thread records its calls on its own connection; do not leak it.
                connection.close()

        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(attempt, examples))
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, LLMError)]
        if failed:
            # Scored with the offline rater so every line has a prediction; said loudly.
            fallback = rate_many([examples[i] for i in failed])
            for i, levels in zip(failed, fallback, strict=True):
                sys.stderr.write(f"{examples[i].id}: model failed ({outcomes[i]}); offline used\n")
                outcomes[i] = levels
            sys.stderr.write(f"{len(failed)} of {len(examples)} lines fell back to offline\n")
        return outcomes  # type: ignore[return-value]
