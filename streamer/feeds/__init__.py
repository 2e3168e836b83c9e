"""Where quotes come from: a push (streaming) provider beside the polling chain (`push.PushSource`), the live/delayed
report of every feed (`board.FeedBoard`), their construction from the configuration (`build`) and the offline push
demo (`demo`)."""
