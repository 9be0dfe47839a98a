defmodule IbkrOauthApiTest do
  # The typed calls (:ibkr_oauth_api) from Elixir, as the README shows them,
  # against the fake IBKR server: accounts, a snapshot with field names as
  # atoms, an order whose question is confirmed only when listed.
  use ExUnit.Case, async: false
  @moduletag :capture_log

  setup do
    {:ok, info} = :ibkr_fake_server.start_from_vectors(:public, %{})
    on_exit(fn -> :ibkr_fake_server.stop() end)
    {:ok, session} = :ibkr_oauth.start_link(Map.put(info.config, :brokerage_session, true))
    on_exit(fn -> if Process.alive?(session), do: :ibkr_oauth.stop(session) end)
    %{session: session}
  end

  @order %{conid: 265598, orderType: "LMT", price: 150.0, side: "BUY", quantity: 10, tif: "DAY"}

  test "accounts, snapshot, order confirmed for a listed question", %{session: s} do
    {:ok, [%{"accountId" => acct} | _]} = :ibkr_oauth_api.accounts(s)
    assert acct == "U1234567"

    {:ok, quotes} = :ibkr_oauth_api.snapshot(s, [265598, 8314], [:last, :bid, :ask, :change_pct])
    assert %{265598 => %{last: 187.5, bid: 187.49, ask: 187.51, change_pct: 0.67}} = quotes
    assert %{8314 => %{last: "C141.25"}} = quotes

    :ok = :ibkr_fake_api.configure(%{questions: [["o354"]]})
    assert {:ok, [%{"order_id" => id}]} =
             :ibkr_oauth_api.place_order(s, acct, [@order], %{confirm: ["o354"]})

    assert {:ok, [%{"order_id" => ^id, "status" => "Submitted"}]} = :ibkr_oauth_api.live_orders(s)
    assert {:ok, %{"msg" => _}} = :ibkr_oauth_api.cancel_order(s, acct, id)
  end

  test "an unlisted question: refused, nothing placed", %{session: s} do
    :ok = :ibkr_fake_api.configure(%{questions: [["o354"]]})

    assert {:error, {:confirm_required, [%{"messageIds" => ["o354"], "message" => [_]}]}} =
             :ibkr_oauth_api.place_order(s, "U1234567", [@order], %{})

    assert {:ok, []} = :ibkr_oauth_api.live_orders(s)
    assert %{replies: [{_, false}]} = :ibkr_fake_api.state()
  end
end
