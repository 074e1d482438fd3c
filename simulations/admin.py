"""The staff screens of learners, situations and chats are registered by study.admin_content:
who may see a learner's rows follows the per-study grants, and `simulations` knows no study."""
