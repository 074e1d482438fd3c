"""The staff screens of drafts and feedback requests are registered by study.admin_content: who
may see a learner's rows follows the per-study grants, and `feedback` never imports `study`."""
