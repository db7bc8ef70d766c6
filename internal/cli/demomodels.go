package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/demo"
	"github.com/corral-dev/corral/internal/llm"
)

// demoPrompt is what the agent notifier asks the model: it names a customer
// by email and card, which must not reach a model provider.
const demoPrompt = "Tell jane.doe@example.com (card 4111 1111 1111 1111) that order ORD-1001 is 30 hours late."

// demoModels are the resources the model tour adds: the demo world's model
// behind corral, and a budget small enough to hit.
func demoModels(baseURL string) ([]config.Document, error) {
	yaml := fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: assistant}
spec:
  description: The demo world's model, on an OpenAI-compatible server.
  provider: openai
  baseURL: %s
  model: demo-1
  region: eu-west-1
  redact: reversible
  pricing: {inputPerMTok: 2.50, outputPerMTok: 10.00}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: notifier-demo}
spec:
  scope: {agent: notifier}
  window: total
  limit: {calls: 3}
`, baseURL)
	return config.Decode("demo", []byte(yaml))
}

// modelTour shows the model gateway: Agent/notifier calls the demo model
// through the OpenAI-compatible edge, with the customer's data redacted on
// the way out and restored on the way back, until its budget runs out.
func modelTour(ctx context.Context, s streams, c *client, baseURL string, model *demo.Model, step func(int, string)) error {
	step(9, "as Agent/notifier, through /openai/v1 (any OpenAI SDK works): ask Model/assistant to draft a delay notice")
	docs, err := demoModels(baseURL)
	if err != nil {
		return err
	}
	if _, err := c.apply(ctx, docs); err != nil {
		return err
	}
	var created api.CreatedKey
	if err := c.do(ctx, "POST", "/v1/keys", api.CreateKeyRequest{Agent: "notifier"}, &created); err != nil {
		return err
	}
	agent := newClient(c.base, created.Secret)
	if err := awaitDemoModel(ctx, c, agent); err != nil {
		return err
	}
	req := map[string]any{"model": "assistant", "messages": []any{map[string]any{"role": "user", "content": demoPrompt}}}
	var answer llm.ChatResponse
	if err := agent.do(ctx, "POST", "/openai/v1/chat/completions", req, &answer); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  the agent sent:      %s\n", demoPrompt)
	fmt.Fprintf(s.out, "  the model received:  %s\n", model.LastPrompt())
	if len(answer.Choices) > 0 {
		fmt.Fprintf(s.out, "  the agent got back:  %s\n", answer.Choices[0].Message.Content.String())
	}
	fmt.Fprintf(s.out, "  (redact: reversible: placeholders out, originals restored in the answer; %d+%d tokens charged)\n",
		answer.Usage.PromptTokens, answer.Usage.CompletionTokens)

	step(10, "Budget/notifier-demo allows 3 model calls: the 4th is refused before it leaves")
	for i := 2; i <= 4; i++ {
		err := agent.do(ctx, "POST", "/openai/v1/chat/completions", req, nil)
		var refused *apiError
		switch {
		case err == nil:
			fmt.Fprintf(s.out, "  call %d -> 200\n", i)
		case errors.As(err, &refused):
			fmt.Fprintf(s.out, "  call %d -> HTTP %d %s: %s\n", i, refused.Status, refused.Code, refused.Detail)
		default:
			return err
		}
	}
	return nil
}

// awaitDemoModel waits until the model and the budget have loaded: both
// follow the registry in the background.
func awaitDemoModel(ctx context.Context, admin, agent *client) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var models struct{ Data []struct{ ID string } }
		var budgets api.BudgetList
		if err := agent.do(ctx, "GET", "/openai/v1/models", nil, &models); err != nil {
			return err
		}
		if err := admin.do(ctx, "GET", "/v1/budgets", nil, &budgets); err != nil {
			return err
		}
		hasModel := slices.ContainsFunc(models.Data, func(m struct{ ID string }) bool { return m.ID == "assistant" })
		hasBudget := slices.ContainsFunc(budgets.Items, func(b budget.Status) bool { return b.Budget == "notifier-demo" })
		if hasModel && hasBudget {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("demo: Model/assistant or Budget/notifier-demo did not load")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
