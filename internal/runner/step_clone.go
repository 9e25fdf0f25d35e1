package runner

import (
	"context"
	"path/filepath"

	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/usererr"
)

// contentState is the clone step's section: the checkout is in place.
type contentState struct {
	RepoName string `json:"repoName,omitempty"` // /workspaces/<RepoName>
	Ready    bool   `json:"ready,omitempty"`
}

// cloneStep puts the repository into the environment's workspace. git runs
// in the clone sandbox, inside the environment's network namespace: a URL
// reaches only what the environment may, never the runner host's services.
type cloneStep struct {
	net        envNet
	clone      cloner
	allowLocal bool     // local paths may be cloned (`cove up`)
	sandbox    []string // the command line of the clone sandbox
}

// cloner clones a source into a workspace (content.Clone).
type cloner func(ctx context.Context, src content.Source, opts content.Options) (repoDir string, err error)

func (c cloneStep) run(ctx context.Context, e *stepEnv) error {
	src := e.env.GetSpec().GetContent()
	e.rep.sub(subContent, subInProgress, "cloning "+src.GetGitUrl())
	err := c.do(ctx, e)
	if err != nil {
		e.rep.sub(subContent, subFailed, userMessage(err))
	} else {
		e.rep.sub(subContent, subReady, "")
	}
	return err
}

func (c cloneStep) do(ctx context.Context, e *stepEnv) error {
	src, st := e.env.GetSpec().GetContent(), e.st
	if isLocalSource(src.GetGitUrl()) && !c.allowLocal {
		return usererr.New("source %q is a local path, which this runner does not accept: use a git URL", src.GetGitUrl())
	}
	opts := content.Options{WorkspaceDir: e.lay.Workspace(), StagingDir: e.lay.Staging(), IDMap: st.IDMap, Sandbox: c.sandbox}
	att, err := c.net.attach(ctx, e)
	if err != nil {
		return err
	}
	opts.NetNSPath = att.netns
	if att.netns != "" {
		opts.ResolvConf = e.lay.ResolvConf()
	}
	repo, err := c.clone(ctx, content.Source{GitURL: src.GetGitUrl(), Ref: src.GetRef()}, opts)
	if err != nil {
		return err
	}
	st.Content = contentState{RepoName: filepath.Base(repo), Ready: true}
	return nil
}
