"""Multi-task prompt tuning (PEFT ``MultitaskPromptTuningConfig``): one shared prompt, scaled per task."""
