defmodule IbkrOauthStreamTest do
  # The README's streaming GenServer, from Elixir, against the fake IBKR
  # server's websocket: it gets up, keeps the last price, and goes down/up
  # again when the socket drops.
  use ExUnit.Case, async: false
  @moduletag :capture_log

  defmodule Quotes do
    use GenServer

    def start_link({session, conid, test}), do: GenServer.start_link(__MODULE__, {session, conid, test})

    @impl true
    def init({session, conid, test}) do
      {:ok, sub} = :ibkr_oauth.subscribe(session, {:market_data, conid, ["31", "84", "86"]})
      {:ok, %{sub: sub, last: nil, live: false, test: test}}
    end

    @impl true
    def handle_call(:last, _from, s), do: {:reply, {s.live, s.last}, s}

    @impl true
    def handle_info({:ibkr_oauth, sub, {:data, %{"31" => last}}}, %{sub: sub} = s),
      do: {:noreply, %{s | last: last}}

    def handle_info({:ibkr_oauth, sub, {:data, _other_fields}}, %{sub: sub} = s), do: {:noreply, s}

    def handle_info({:ibkr_oauth, sub, {:status, status}}, %{sub: sub} = s) do
      send(s.test, {:status, status})
      {:noreply, %{s | live: status == :up}}
    end
  end

  setup do
    {:ok, info} = :ibkr_fake_server.start_from_vectors(:public, %{ws: %{hb_ms: 1000, smd_rate_ms: 100}})
    on_exit(fn -> :ibkr_fake_server.stop() end)
    {:ok, session} = :ibkr_oauth.start_link(info.config)
    on_exit(fn -> if Process.alive?(session), do: :ibkr_oauth.stop(session) end)
    %{session: session}
  end

  test "a GenServer subscribed to market data keeps the last price through a drop", %{session: s} do
    {:ok, quotes} = Quotes.start_link({s, 265598, self()})
    assert_receive {:status, :up}, 30_000
    assert wait_for_price(quotes)
    assert 1 == :ibkr_fake_ws.drop_all()
    assert_receive {:status, {:down, _}}, 30_000
    assert_receive {:status, :up}, 30_000
    assert {true, "189." <> _} = GenServer.call(quotes, :last)
  end

  defp wait_for_price(quotes, n \\ 300) do
    case GenServer.call(quotes, :last) do
      {true, price} when is_binary(price) -> true
      _ when n > 0 -> Process.sleep(20); wait_for_price(quotes, n - 1)
      _ -> false
    end
  end
end
